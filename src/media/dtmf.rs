//! RFC 4733 telephone-events (DTMF over RTP): payload parse and build,
//! event tracking on receive, and rescaling an event stream from one RTP
//! clock to another (a browser's `telephone-event/48000` to a phone's
//! `/8000`).
//!
//! Payload (4 bytes per event): event code, E(nd) bit, R bit, 6-bit volume
//! (−dBm0), 16-bit duration in RTP clock units since the event's timestamp.

use thiserror::Error;

/// Why a telephone-event payload was refused.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum DtmfError {
    /// Fewer than 4 bytes.
    #[error("telephone-event payload too short ({0} bytes)")]
    TooShort(usize),
}

/// One RFC 4733 event block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// Event code: 0–9 digits, 10 `*`, 11 `#`, 12–15 `A`–`D`, others (flash…).
    pub event: u8,
    /// Last packet(s) of the event.
    pub end: bool,
    /// Power level, −dBm0 (0..=63).
    pub volume: u8,
    /// Duration so far, RTP clock units.
    pub duration: u16,
}

impl TelephoneEvent {
    /// Parses the first event block of a payload (extra blocks are redundancy).
    pub fn parse(payload: &[u8]) -> Result<Self, DtmfError> {
        let b: &[u8; 4] = payload
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or(DtmfError::TooShort(payload.len()))?;
        Ok(TelephoneEvent {
            event: b[0],
            end: b[1] & 0x80 != 0,
            volume: b[1] & 0x3F,
            duration: u16::from_be_bytes([b[2], b[3]]),
        })
    }

    /// The 4-byte payload.
    pub fn to_bytes(&self) -> [u8; 4] {
        let d = self.duration.to_be_bytes();
        [
            self.event,
            (if self.end { 0x80 } else { 0 }) | (self.volume & 0x3F),
            d[0],
            d[1],
        ]
    }

    /// The DTMF character for digit events, `None` for other events.
    pub fn digit(&self) -> Option<char> {
        digit_for_event(self.event)
    }
}

/// The DTMF character of an event code (0–15).
pub fn digit_for_event(event: u8) -> Option<char> {
    b"0123456789*#ABCD".get(event as usize).map(|&c| c as char)
}

/// The event code of a DTMF character.
pub fn event_for_digit(digit: char) -> Option<u8> {
    "0123456789*#ABCD"
        .find(digit.to_ascii_uppercase())
        .map(|i| i as u8)
}

/// Rescales an event stream from one RTP clock to another.
///
/// Timestamps are mapped through an anchor (an input timestamp and the output
/// timestamp it corresponds to), so consecutive events keep their spacing and
/// stay continuous with the output stream's own timeline. Durations are
/// scaled; when an up-scaled duration no longer fits 16 bits the event is
/// continued as a new segment (RFC 4733 §2.5.1.3): timestamp advanced by
/// 0xFFFF, duration counted from there.
#[derive(Debug, Clone)]
pub struct DtmfRescaler {
    from: u32,
    to: u32,
    anchor: Option<(u32, u32)>,
}

impl DtmfRescaler {
    /// From clock `from` Hz to clock `to` Hz.
    pub fn new(from: u32, to: u32) -> Self {
        DtmfRescaler {
            from: from.max(1),
            to: to.max(1),
            anchor: None,
        }
    }

    /// Declares that input timestamp `input_ts` is output timestamp `output_ts`.
    pub fn anchor(&mut self, input_ts: u32, output_ts: u32) {
        self.anchor = Some((input_ts, output_ts));
    }

    /// Whether an anchor is set.
    pub fn is_anchored(&self) -> bool {
        self.anchor.is_some()
    }

    fn scale(&self, ticks: i64) -> i64 {
        // Round to nearest, symmetric for negative offsets.
        let num = ticks * self.to as i64;
        let den = self.from as i64;
        if num >= 0 {
            (num + den / 2) / den
        } else {
            -((-num + den / 2) / den)
        }
    }

    /// Maps an input timestamp to the output clock (anchoring on first use at 0).
    pub fn timestamp(&mut self, input_ts: u32) -> u32 {
        let (in0, out0) = *self.anchor.get_or_insert((input_ts, 0));
        let offset = input_ts.wrapping_sub(in0) as i32 as i64;
        out0.wrapping_add(self.scale(offset) as u32)
    }

    /// Rescales one event packet (event timestamp `input_ts`); returns the
    /// output timestamp and event.
    pub fn rescale(&mut self, input_ts: u32, ev: TelephoneEvent) -> (u32, TelephoneEvent) {
        let start = self.timestamp(input_ts);
        let duration = self.scale(ev.duration as i64).max(0) as u64;
        let segment = duration / 0xFFFF;
        // A segment that is exactly full belongs to the previous segment.
        let segment = if segment > 0 && duration.is_multiple_of(0xFFFF) {
            segment - 1
        } else {
            segment
        };
        let ts = start.wrapping_add((segment * 0xFFFF) as u32);
        let duration = (duration - segment * 0xFFFF) as u16;
        (ts, TelephoneEvent { duration, ..ev })
    }
}

/// What [`DtmfReceiver::on_packet`] learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtmfNotice {
    /// A new event began (first packet seen).
    Started {
        /// Event code.
        event: u8,
        /// The event before it, if it was still open (all its end packets
        /// lost): it ends here, `(event, duration ms)`.
        unfinished: Option<(u8, u32)>,
    },
    /// Another packet of the event in progress.
    Continued,
    /// The event ended (first end packet); later retransmissions are `Repeat`.
    Ended {
        /// Event code.
        event: u8,
        /// Total duration, ms.
        duration_ms: u32,
    },
    /// A retransmitted end packet or a packet of an event already ended.
    Repeat,
}

/// Tracks the events of one incoming stream: new event, end, retransmissions.
#[derive(Debug, Clone)]
pub struct DtmfReceiver {
    clock: u32,
    current: Option<(u32, TelephoneEvent)>,
    ended: Option<u32>,
    last_packet_ms: u64,
}

impl DtmfReceiver {
    /// For a stream with RTP clock `clock` Hz.
    pub fn new(clock: u32) -> Self {
        DtmfReceiver {
            clock: clock.max(1),
            current: None,
            ended: None,
            last_packet_ms: 0,
        }
    }

    fn ms(&self, duration: u16) -> u32 {
        (duration as u64 * 1000 / self.clock as u64) as u32
    }

    /// Classifies one event packet with RTP timestamp `ts` received at `now_ms`.
    pub fn on_packet(&mut self, ts: u32, ev: TelephoneEvent, now_ms: u64) -> DtmfNotice {
        self.last_packet_ms = now_ms;
        if self.ended == Some(ts) {
            return DtmfNotice::Repeat;
        }
        let is_new = self.current.is_none_or(|(cur, _)| cur != ts);
        // An event still open (all its end packets lost) ends where the next begins.
        let unfinished = match self.current {
            Some((cur, open)) if cur != ts => Some((open.event, self.ms(open.duration))),
            _ => None,
        };
        self.current = Some((ts, ev));
        // An end packet that follows an open event starts its own event
        // (below): it ends on its next, repeated, end packet.
        if ev.end && unfinished.is_none() {
            self.ended = Some(ts);
            self.current = None;
            return DtmfNotice::Ended {
                event: ev.event,
                duration_ms: self.ms(ev.duration),
            };
        }
        if is_new {
            self.ended = None;
            DtmfNotice::Started {
                event: ev.event,
                unfinished,
            }
        } else {
            DtmfNotice::Continued
        }
    }

    /// Ends an event whose end packets were all lost after `timeout_ms` of
    /// silence, returning it with its last known duration.
    pub fn poll_timeout(&mut self, now_ms: u64, timeout_ms: u64) -> Option<(u8, u32)> {
        let (ts, ev) = self.current?;
        if now_ms.saturating_sub(self.last_packet_ms) < timeout_ms {
            return None;
        }
        self.current = None;
        self.ended = Some(ts);
        Some((ev.event, self.ms(ev.duration)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A telephone-event payload at volume 10.
    fn ev(event: u8, duration: u16, end: bool) -> TelephoneEvent {
        TelephoneEvent {
            event,
            end,
            volume: 10,
            duration,
        }
    }

    #[test]
    fn parse_and_build() {
        let ev = TelephoneEvent::parse(&[5, 0x8A, 0x03, 0x20]).unwrap();
        assert_eq!(
            ev,
            TelephoneEvent {
                event: 5,
                end: true,
                volume: 10,
                duration: 800
            }
        );
        assert_eq!(ev.to_bytes(), [5, 0x8A, 0x03, 0x20]);
        assert_eq!(ev.digit(), Some('5'));
        assert_eq!(
            TelephoneEvent::parse(&[1, 2, 3]),
            Err(DtmfError::TooShort(3))
        );
        assert_eq!(event_for_digit('#'), Some(11));
        assert_eq!(event_for_digit('d'), Some(15));
        assert_eq!(digit_for_event(10), Some('*'));
        assert_eq!(digit_for_event(16), None);
        // R bit and reserved bits are ignored; trailing redundancy is fine.
        let ev = TelephoneEvent::parse(&[11, 0x4F, 0, 160, 9, 9, 9, 9]).unwrap();
        assert_eq!(
            (ev.event, ev.end, ev.volume, ev.duration),
            (11, false, 15, 160)
        );
    }

    /// A browser's event at 48 kHz forwarded to an 8 kHz phone.
    #[test]
    fn rescale_48000_to_8000() {
        let mut r = DtmfRescaler::new(48_000, 8000);
        // Output audio timeline is at 1600 when the event starts at input 960000.
        r.anchor(960_000, 1600);
        let packets = [
            (960u16, false),
            (1920, false),
            (2880, false),
            (4800, true),
            (4800, true),
        ];
        let out: Vec<(u32, u16, bool)> = packets
            .iter()
            .map(|&(d, e)| {
                let (ts, ev) = r.rescale(
                    960_000,
                    TelephoneEvent {
                        event: 1,
                        end: e,
                        volume: 10,
                        duration: d,
                    },
                );
                (ts, ev.duration, ev.end)
            })
            .collect();
        assert_eq!(
            out,
            vec![
                (1600, 160, false),
                (1600, 320, false),
                (1600, 480, false),
                (1600, 800, true),
                (1600, 800, true)
            ]
        );
        // The next event one second later lands one second later on the 8 kHz clock.
        let (ts, ev) = r.rescale(
            1_008_000,
            TelephoneEvent {
                event: 2,
                end: false,
                volume: 10,
                duration: 480,
            },
        );
        assert_eq!((ts, ev.duration), (1600 + 8000, 80));
        // Across the 32-bit wrap of the input clock the mapping stays continuous.
        let mut r = DtmfRescaler::new(48_000, 8000);
        r.anchor(u32::MAX - 47_999, 100);
        assert_eq!(r.timestamp(48_000), 100 + 8000 + 8000);
    }

    #[test]
    fn upscaling_long_event_continues_in_a_new_segment() {
        let mut r = DtmfRescaler::new(8000, 48_000);
        r.anchor(0, 0);
        // 2 s at 8 kHz = 16000 units = 96000 at 48 kHz > 0xFFFF.
        let (ts, ev) = r.rescale(
            0,
            TelephoneEvent {
                event: 3,
                end: false,
                volume: 0,
                duration: 16_000,
            },
        );
        assert_eq!(ts, 0xFFFF);
        assert_eq!(ev.duration as u32, 96_000 - 0xFFFF);
        let (ts, ev) = r.rescale(
            0,
            TelephoneEvent {
                event: 3,
                end: false,
                volume: 0,
                duration: 8000,
            },
        );
        assert_eq!((ts, ev.duration), (0, 48_000));
    }

    #[test]
    fn receiver_reports_start_end_once_and_timeouts() {
        let mut rx = DtmfReceiver::new(8000);
        assert_eq!(
            rx.on_packet(100, ev(7, 160, false), 0),
            DtmfNotice::Started {
                event: 7,
                unfinished: None
            }
        );
        assert_eq!(
            rx.on_packet(100, ev(7, 320, false), 20),
            DtmfNotice::Continued
        );
        assert_eq!(
            rx.on_packet(100, ev(7, 800, true), 40),
            DtmfNotice::Ended {
                event: 7,
                duration_ms: 100
            }
        );
        assert_eq!(rx.on_packet(100, ev(7, 800, true), 41), DtmfNotice::Repeat);
        assert_eq!(
            rx.on_packet(2000, ev(7, 160, false), 300),
            DtmfNotice::Started {
                event: 7,
                unfinished: None
            }
        );
        assert_eq!(rx.poll_timeout(350, 100), None);
        assert_eq!(rx.poll_timeout(400, 100), Some((7, 20)));
        assert_eq!(
            rx.on_packet(2000, ev(7, 320, true), 410),
            DtmfNotice::Repeat
        );
    }

    /// Every end packet of a digit lost and the next digit within the
    /// timeout: the open digit is reported when the next one starts.
    #[test]
    fn receiver_ends_an_open_event_when_the_next_one_starts() {
        let mut rx = DtmfReceiver::new(8000);
        rx.on_packet(100, ev(1, 160, false), 0);
        rx.on_packet(100, ev(1, 800, false), 80);
        assert_eq!(
            rx.on_packet(2000, ev(2, 160, false), 200),
            DtmfNotice::Started {
                event: 2,
                unfinished: Some((1, 100))
            }
        );
        // Only end packets of the next one arrive: the open one still ends first.
        rx.on_packet(4000, ev(3, 160, false), 400);
        assert_eq!(
            rx.on_packet(6000, ev(4, 480, true), 500),
            DtmfNotice::Started {
                event: 4,
                unfinished: Some((3, 20))
            }
        );
        assert_eq!(
            rx.on_packet(6000, ev(4, 480, true), 501),
            DtmfNotice::Ended {
                event: 4,
                duration_ms: 60
            }
        );
        assert_eq!(
            rx.on_packet(6000, ev(4, 480, true), 502),
            DtmfNotice::Repeat
        );
    }
}
