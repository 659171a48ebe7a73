#!/usr/bin/env python3
"""Writes a pcap of PACKETS RTP packets, 20 ms apart, PCMU (payload type 0,
160 bytes of a 1 kHz tone), for SIPp's play_pcap_audio (benches/calls/run.sh).
Same layout as write_tone_pcap in tests/common/media.rs.

    pcap.py OUT.pcap PACKETS

With OUT.ulaw, writes the same audio as raw 8 kHz mu-law (PACKETS x 160
bytes) for SIPp's rtp_stream instead."""

import math
import struct
import sys


def ulaw(sample):
    bias, clip = 0x84, 32635
    sign = 0x80 if sample < 0 else 0
    sample = min(abs(sample), clip) + bias
    exponent = 7
    mask = 0x4000
    while exponent > 0 and not sample & mask:
        exponent -= 1
        mask >>= 1
    mantissa = (sample >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def main():
    out, packets = sys.argv[1], int(sys.argv[2])
    if out.endswith(".ulaw"):
        # Raw mu-law for SIPp's rtp_stream: PACKETS x 160 samples.
        tone = bytes(ulaw(int(8000 * math.sin(2 * math.pi * 1000 * n / 8000))) for n in range(160))
        with open(out, "wb") as f:
            f.write(tone * packets)
        return
    tone = bytes(ulaw(int(8000 * math.sin(2 * math.pi * 1000 * n / 8000))) for n in range(160))
    data = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for k in range(packets):
        rtp = struct.pack("!BBHII", 0x80, 0, k & 0xFFFF, (k * 160) & 0xFFFFFFFF, 0x12345678) + tone
        udp = struct.pack("!HHHH", 6000, 6000, 8 + len(rtp), 0) + rtp
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                         bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1])) + udp
        frame = bytes(12) + b"\x08\x00" + ip
        us = k * 20000
        data.append(struct.pack("<IIII", us // 1000000, us % 1000000, len(frame), len(frame)) + frame)
    with open(out, "wb") as f:
        f.write(b"".join(data))


if __name__ == "__main__":
    main()
