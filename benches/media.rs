//! Media engine benchmark: codecs, resampler, transcoded calls, mixer rooms.
//!
//!     cargo bench --bench media            (add `-- quick` for a short run)
//!
//! Plain `fn main` timing with `std::time::Instant`. Every figure is the
//! fastest of several repetitions (the machine is shared and noisy; the
//! fastest run is the one least disturbed), with the median in brackets.
//! Audio is a deterministic speech-like signal (voiced harmonics under a
//! syllable envelope, plus noise), so codecs do realistic work.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use switchboard::media::codec::{CodecKind, CodecSpec, OpusParams};
use switchboard::media::dsp::{snr_db, speech_like};
use switchboard::media::{
    InPacket, ParticipantConfig, ParticipantId, Resampler, Room, RoomConfig, frame_samples,
};

/// Counts heap allocations, to show the room's steady state allocates nothing.
struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

struct Opts {
    reps: usize,
    frames: usize,
    ticks: usize,
}

fn speech(rate: u32, len: usize, seed: u64) -> Vec<i16> {
    speech_like(rate, len, seed)
}

/// Runs `f` `reps` times; returns (fastest, median) of its result.
fn best_of(reps: usize, mut f: impl FnMut() -> f64) -> (f64, f64) {
    let mut v: Vec<f64> = (0..reps).map(|_| f()).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    (v[0], v[v.len() / 2])
}

fn fmt(v: (f64, f64)) -> String {
    format!("{:>8.2} ({:>7.2})", v.0, v.1)
}

/// Opus at `complexity` at every rate (default bitrates: 32 kbit/s, 20 at 8 kHz).
fn opus_spec(complexity: u8) -> CodecSpec {
    CodecSpec {
        opus: OpusParams {
            complexity,
            narrowband_complexity: complexity,
            // SILK at 8 kHz, as browsers send and opus-pure encodes.
            narrowband_celt: false,
            ..OpusParams::default()
        },
        ..CodecSpec::opus(111)
    }
}

/// One pass over `frames` with our codec wrapper: (encode µs, decode µs, bytes) per frame.
fn run_ours(spec: CodecSpec, rate: u32, frames: &[&[i16]]) -> (f64, f64, usize) {
    let mut c = spec.build(rate).unwrap();
    let mut out = vec![0u8; 1500];
    let mut packets = Vec::with_capacity(frames.len());
    let t = Instant::now();
    for f in frames {
        let len = c.encode(f, &mut out).unwrap();
        packets.push(out[..len].to_vec());
    }
    let enc = t.elapsed().as_secs_f64() * 1e6 / frames.len() as f64;
    let mut c = spec.build(rate).unwrap();
    let mut pcm = vec![0i16; frame_samples(rate) * 6];
    let t = Instant::now();
    for p in &packets {
        black_box(c.decode(p, &mut pcm).unwrap());
    }
    let dec = t.elapsed().as_secs_f64() * 1e6 / frames.len() as f64;
    (
        enc,
        dec,
        packets.iter().map(Vec::len).sum::<usize>() / packets.len(),
    )
}

/// The same pass with the pure-Rust `opus-pure` crate, same settings.
fn run_pure(complexity: u8, rate: u32, frames: &[&[i16]]) -> (f64, f64, usize) {
    let n = frame_samples(rate);
    let mut e = pure_encoder(rate, complexity);
    let mut out = vec![0u8; 1500];
    let mut packets = Vec::with_capacity(frames.len());
    let t = Instant::now();
    for f in frames {
        let len = e.encode_s16(f, n, &mut out).unwrap();
        packets.push(out[..len].to_vec());
    }
    let enc = t.elapsed().as_secs_f64() * 1e6 / frames.len() as f64;
    let mut d = opus_pure::OpusDecoder::new(rate as i32, 1).unwrap();
    let mut pcm = vec![0i16; n];
    let t = Instant::now();
    for p in &packets {
        black_box(d.decode_s16(p, n, &mut pcm).unwrap());
    }
    let dec = t.elapsed().as_secs_f64() * 1e6 / frames.len() as f64;
    (
        enc,
        dec,
        packets.iter().map(Vec::len).sum::<usize>() / packets.len(),
    )
}

/// Fastest and median of each column over runs.
fn summarize(runs: &[(f64, f64, usize)]) -> ((f64, f64), (f64, f64), usize) {
    let col = |f: &dyn Fn(&(f64, f64, usize)) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        (v[0], v[v.len() / 2])
    };
    (col(&|r| r.0), col(&|r| r.1), runs[0].2)
}

fn pure_encoder(rate: u32, complexity: u8) -> opus_pure::OpusEncoder {
    let p = OpusParams::default();
    let mut e = opus_pure::OpusEncoder::new(rate as i32, 1, opus_pure::Application::Voip).unwrap();
    e.complexity = complexity as i32;
    e.bitrate_bps = if rate <= 8000 {
        p.narrowband_bitrate
    } else {
        p.bitrate
    } as i32;
    e.use_inband_fec = p.fec;
    e.packet_loss_perc = p.packet_loss_percent as i32;
    e
}

/// Cross-decoding SNR (dB): libopus → opus-pure and opus-pure → libopus, 48 kHz.
fn interop(pcm: &[i16]) -> (f32, f32, f32) {
    let n = 960;
    let frames: Vec<&[i16]> = pcm.chunks_exact(n).take(200).collect();
    let spec = opus_spec(9);
    let mut lib = spec.build(48_000).unwrap();
    let mut pure = pure_encoder(48_000, 9);
    let mut lib_dec = spec.build(48_000).unwrap();
    let mut pure_dec = opus_pure::OpusDecoder::new(48_000, 1).unwrap();
    let (mut ref_lib, mut lib_to_pure, mut pure_to_lib) = (vec![], vec![], vec![]);
    let mut buf = vec![0i16; n];
    let mut pkt = vec![0u8; 1500];
    let mut own = spec.build(48_000).unwrap();
    for f in &frames {
        let len = lib.encode(f, &mut pkt).unwrap();
        pure_dec.decode_s16(&pkt[..len], n, &mut buf).unwrap();
        lib_to_pure.extend_from_slice(&buf);
        own.decode(&pkt[..len], &mut buf).unwrap();
        ref_lib.extend_from_slice(&buf);
        let len = pure.encode_s16(f, n, &mut pkt).unwrap();
        lib_dec.decode(&pkt[..len], &mut buf).unwrap();
        pure_to_lib.extend_from_slice(&buf);
    }
    let input: Vec<i16> = frames.concat();
    (
        snr_db(&input, &ref_lib, 1000),
        snr_db(&input, &lib_to_pure, 1000),
        snr_db(&input, &pure_to_lib, 1000),
    )
}

fn bench_codecs(o: &Opts) {
    println!(
        "\n## Codecs: µs per 20 ms frame, fastest (median) of {} runs of {} frames",
        o.reps, o.frames
    );
    println!("| codec | PCM rate | encode µs | decode µs | bytes/frame |");
    println!("|---|---|---|---|---|");
    for (name, spec, rate) in [
        ("PCMU", CodecSpec::pcmu(), 8000),
        ("PCMA", CodecSpec::pcma(), 8000),
        ("G.722", CodecSpec::g722(), 16_000),
    ] {
        let pcm = speech(rate, frame_samples(rate) * o.frames, 1);
        let frames: Vec<&[i16]> = pcm.chunks_exact(frame_samples(rate)).collect();
        let runs: Vec<_> = (0..o.reps).map(|_| run_ours(spec, rate, &frames)).collect();
        let (e, d, b) = summarize(&runs);
        println!("| {name} | {rate} | {} | {} | {b} |", fmt(e), fmt(d));
    }
    // libopus and opus-pure runs alternate, so both see the same machine load.
    for rate in [8000, 16_000, 48_000] {
        let pcm = speech(rate, frame_samples(rate) * o.frames, 2);
        let frames: Vec<&[i16]> = pcm.chunks_exact(frame_samples(rate)).collect();
        for cx in [0u8, 5, 9] {
            let (mut lib, mut pure) = (vec![], vec![]);
            for _ in 0..o.reps {
                lib.push(run_ours(opus_spec(cx), rate, &frames));
                pure.push(run_pure(cx, rate, &frames));
            }
            for (name, runs) in [("libopus", lib), ("opus-pure", pure)] {
                let (e, d, b) = summarize(&runs);
                println!(
                    "| Opus {name} c{cx} | {rate} | {} | {} | {b} |",
                    fmt(e),
                    fmt(d)
                );
            }
        }
    }
    let pcm = speech(48_000, 960 * 200, 3);
    let (own, l2p, p2l) = interop(&pcm);
    println!(
        "\nOpus interop, 48 kHz c9, SNR vs input: libopus→libopus {own:.1} dB, \
         libopus→opus-pure {l2p:.1} dB, opus-pure→libopus {p2l:.1} dB"
    );
}

fn bench_resampler(o: &Opts) {
    println!("\n## Resampler: µs per 20 ms frame");
    println!("| from → to | µs |");
    println!("|---|---|");
    for (from, to) in [
        (8000, 16_000),
        (16_000, 8000),
        (8000, 48_000),
        (48_000, 8000),
        (16_000, 48_000),
        (48_000, 16_000),
    ] {
        let pcm = speech(from, frame_samples(from) * o.frames, 4);
        let r = best_of(o.reps, || {
            let mut r = Resampler::new(from, to).unwrap();
            let mut out = vec![0i16; frame_samples(to)];
            let t = Instant::now();
            for f in pcm.chunks_exact(frame_samples(from)) {
                black_box(r.process(f, &mut out));
            }
            t.elapsed().as_secs_f64() * 1e6 / o.frames as f64
        });
        println!("| {from} → {to} | {} |", fmt(r));
    }
}

/// Per 20 ms, both directions of an Opus↔PCMU call.
fn bench_transcoding(o: &Opts) {
    println!("\n## Transcoded Opus↔PCMU call: µs per 20 ms (both directions), % of one core");
    println!("Opus sender: what the browser sends us. `fullband` = Chromium's default (48 kHz,");
    println!("32 kbit/s); `narrowband` = a sender told `maxplaybackrate=8000` in our SDP.");
    println!("| pipeline | Opus sender | our Opus complexity | µs per 20 ms | % of a core |");
    println!("|---|---|---|---|---|");
    let opus48 = speech(48_000, 960 * o.frames, 5);
    let opus8 = speech(8000, 160 * o.frames, 5);
    let pcmu8 = speech(8000, 160 * o.frames, 6);
    let mut e = CodecSpec::pcmu().build(8000).unwrap();
    let pcmu_pkts: Vec<Vec<u8>> = pcmu8
        .chunks_exact(160)
        .map(|f| e.encode_vec(f).unwrap())
        .collect();
    // What the browser sends: Chromium encodes at complexity 9.
    let sender = opus_spec(9);
    let mut e = sender.build(48_000).unwrap();
    let fullband: Vec<Vec<u8>> = opus48
        .chunks_exact(960)
        .map(|f| e.encode_vec(f).unwrap())
        .collect();
    let mut e = sender.build(8000).unwrap();
    let narrowband: Vec<Vec<u8>> = opus8
        .chunks_exact(160)
        .map(|f| e.encode_vec(f).unwrap())
        .collect();

    for cx in [0u8, 1, 5] {
        // Naive: Opus at 48 kHz, resampled to and from 8 kHz.
        let a = best_of(o.reps, || {
            let (mut od, mut oe) = (
                opus_spec(cx).build(48_000).unwrap(),
                opus_spec(cx).build(48_000).unwrap(),
            );
            let (mut ud, mut ue) = (
                CodecSpec::pcmu().build(8000).unwrap(),
                CodecSpec::pcmu().build(8000).unwrap(),
            );
            let (mut down, mut up) = (
                Resampler::new(48_000, 8000).unwrap(),
                Resampler::new(8000, 48_000).unwrap(),
            );
            let (mut b48, mut b8, mut pkt) =
                (vec![0i16; 960 * 6], vec![0i16; 160], vec![0u8; 1500]);
            let mut b48b = vec![0i16; 960];
            let t = Instant::now();
            for (op, up_pkt) in fullband.iter().zip(&pcmu_pkts) {
                od.decode(op, &mut b48).unwrap();
                down.process(&b48[..960], &mut b8);
                black_box(ue.encode(&b8, &mut pkt).unwrap());
                ud.decode(up_pkt, &mut b8).unwrap();
                up.process(&b8, &mut b48b);
                black_box(oe.encode(&b48b, &mut pkt).unwrap());
            }
            t.elapsed().as_secs_f64() * 1e6 / fullband.len() as f64
        });
        println!(
            "| decode+resample+encode at 48 kHz | fullband | {cx} | {} | {:.3} |",
            fmt(a),
            a.0 / 200.0
        );
        // The room: Opus runs at the 8 kHz mixing rate, jitter buffers included;
        // our encoder SILK (as before) or CELT-only (the default).
        for (label, opus_pkts, celt) in [
            ("fullband", &fullband, false),
            ("narrowband", &narrowband, false),
            ("fullband", &fullband, true),
            ("narrowband", &narrowband, true),
        ] {
            let mut ours = opus_spec(cx);
            ours.opus.narrowband_celt = celt;
            let label = format!("{label}, we send {}", if celt { "CELT" } else { "SILK" });
            let c = best_of(o.reps, || {
                let mut room = Room::new(RoomConfig::default()).unwrap();
                room.add_participant(ParticipantId(1), ParticipantConfig::new(ours))
                    .unwrap();
                room.add_participant(ParticipantId(2), ParticipantConfig::new(CodecSpec::pcmu()))
                    .unwrap();
                let t = Instant::now();
                for (k, (op, up_pkt)) in opus_pkts.iter().zip(&pcmu_pkts).enumerate() {
                    let now = k as u64 * 20;
                    push(&mut room, 1, 111, k, 960, op, now, None);
                    push(&mut room, 2, 0, k, 160, up_pkt, now, None);
                    black_box(room.tick(now).count());
                }
                t.elapsed().as_secs_f64() * 1e6 / opus_pkts.len() as f64
            });
            println!(
                "| Room::tick (Opus at 8 kHz, no resampling) | {label} | {cx} | {} | {:.3} |",
                fmt(c),
                c.0 / 200.0
            );
        }
    }
    // And a same-codec call, relayed.
    let r = best_of(o.reps, || {
        let mut room = Room::new(RoomConfig::default()).unwrap();
        room.add_participant(ParticipantId(1), ParticipantConfig::new(CodecSpec::pcmu()))
            .unwrap();
        room.add_participant(ParticipantId(2), ParticipantConfig::new(CodecSpec::pcmu()))
            .unwrap();
        let t = Instant::now();
        for (k, p) in pcmu_pkts.iter().enumerate() {
            let now = k as u64 * 20;
            push(&mut room, 1, 0, k, 160, p, now, None);
            push(&mut room, 2, 0, k, 160, p, now, None);
            black_box(room.tick(now).count());
        }
        t.elapsed().as_secs_f64() * 1e6 / pcmu_pkts.len() as f64
    });
    println!(
        "| Room::tick, PCMU↔PCMU relayed | - | - | {} | {:.3} |",
        fmt(r),
        r.0 / 200.0
    );
}

#[allow(clippy::too_many_arguments)]
fn push(
    room: &mut Room,
    id: u64,
    pt: u8,
    k: usize,
    step: u32,
    payload: &[u8],
    now: u64,
    level: Option<u8>,
) {
    let pkt = InPacket {
        payload_type: pt,
        seq: k as u16,
        timestamp: (k as u32).wrapping_mul(step),
        marker: false,
        payload,
        audio_level: level,
    };
    room.push_packet(ParticipantId(id), pkt, now).unwrap();
}

/// A conference of `n` with 3 talkers: µs per tick and per participant.
fn bench_room(o: &Opts, kind: CodecKind, n: usize, levels: bool) -> (f64, f64, f64) {
    let spec = match kind {
        CodecKind::Opus => opus_spec(5),
        _ => CodecSpec::with_pt(kind, kind.static_payload_type().unwrap_or(111)),
    };
    let rate = kind.native_rate();
    let fl = frame_samples(rate);
    let loop_frames = 100;
    // Talkers send speech; listeners send room noise around −60 dBov.
    let mut enc = spec.build(rate).unwrap();
    let talk: Vec<Vec<Vec<u8>>> = (0..3)
        .map(|t| {
            speech(rate, fl * loop_frames, 10 + t)
                .chunks_exact(fl)
                .map(|f| enc.encode_vec(f).unwrap())
                .collect()
        })
        .collect();
    let quiet_pcm: Vec<i16> = speech(rate, fl * loop_frames, 99)
        .iter()
        .map(|&s| s / 200)
        .collect();
    let quiet: Vec<Vec<u8>> = quiet_pcm
        .chunks_exact(fl)
        .map(|f| enc.encode_vec(f).unwrap())
        .collect();
    let step = kind.timestamp_step();
    let pt = spec.payload_type;
    let mut allocs_per_tick = 0.0;
    let per_tick = best_of(o.reps.min(3), || {
        let mut room = Room::new(RoomConfig::default()).unwrap();
        for i in 0..n {
            room.add_participant(ParticipantId(i as u64), ParticipantConfig::new(spec))
                .unwrap();
        }
        let warm = 50;
        let mut t0 = Instant::now();
        let mut a0 = 0;
        for k in 0..warm + o.ticks {
            if k == warm {
                t0 = Instant::now();
                a0 = ALLOCS.load(Ordering::Relaxed);
            }
            let now = k as u64 * 20;
            for i in 0..n {
                let (p, level) = if let Some(t) = talk.get(i) {
                    (&t[k % loop_frames], 20)
                } else {
                    (&quiet[k % loop_frames], 65)
                };
                push(
                    &mut room,
                    i as u64,
                    pt,
                    k,
                    step,
                    p,
                    now,
                    levels.then_some(level),
                );
            }
            black_box(room.tick(now).count());
        }
        let us = t0.elapsed().as_secs_f64() * 1e6 / o.ticks as f64;
        allocs_per_tick = (ALLOCS.load(Ordering::Relaxed) - a0) as f64 / o.ticks as f64;
        us
    });
    (per_tick.0, per_tick.1, allocs_per_tick)
}

fn bench_rooms(o: &Opts) {
    println!("\n## Mixer rooms, 3 talkers, everyone sending every 20 ms (push + tick)");
    println!(
        "(dec+enc = one decode + one encode of that codec at its native rate, Opus c5, measured above)"
    );
    println!(
        "| codec | participants | µs per tick | µs per participant | ÷ (dec+enc) | % of a core | allocs per tick |"
    );
    println!("|---|---|---|---|---|---|---|");
    let one = |kind: CodecKind| {
        let spec = if kind == CodecKind::Opus {
            opus_spec(5)
        } else {
            CodecSpec::with_pt(kind, 0)
        };
        let rate = kind.native_rate();
        let pcm = speech(rate, frame_samples(rate) * o.frames, 7);
        let frames: Vec<&[i16]> = pcm.chunks_exact(frame_samples(rate)).collect();
        let runs: Vec<_> = (0..o.reps).map(|_| run_ours(spec, rate, &frames)).collect();
        let (e, d, _) = summarize(&runs);
        e.0 + d.0
    };
    for (kind, levels, label) in [
        (CodecKind::Pcmu, false, "PCMU"),
        (CodecKind::Opus, false, "Opus 48 kHz"),
        (CodecKind::Opus, true, "Opus + RFC 6464 levels"),
    ] {
        let unit = one(kind);
        for n in [10usize, 50, 200, 500] {
            let (best, median, allocs) = bench_room(o, kind, n, levels);
            let per = best / n as f64;
            println!(
                "| {label} | {n} | {best:.0} ({median:.0}) | {per:.2} | {:.2} | {:.1} | {allocs:.1} |",
                per / unit,
                best / 200.0
            );
        }
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let o = if quick {
        Opts {
            reps: 3,
            frames: 100,
            ticks: 50,
        }
    } else {
        Opts {
            reps: 7,
            frames: 500,
            ticks: 200,
        }
    };
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("# Switchboard media benchmark");
    println!(
        "load average at start: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("libopus {}", opus::version());
    bench_codecs(&o);
    bench_resampler(&o);
    bench_transcoding(&o);
    bench_rooms(&o);
}
