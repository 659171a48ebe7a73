//! Room tests: deterministic, no sockets, no clocks. Senders encode tones,
//! the room runs 20 ms ticks, listeners decode what it sends and measure
//! tones with a Goertzel filter.

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::{Arc, Mutex};

use super::*;
use crate::media::codec::Codec;
use crate::media::dsp::{goertzel, mean_square, sine};
use crate::media::frame_samples;
use crate::media::tone::Tone;

/// A test leg: sends an encoded tone, decodes what the room sends back.
struct Leg {
    id: ParticipantId,
    enc: Box<dyn Codec>,
    dec: Box<dyn Codec>,
    freq: f32,
    amplitude: f32,
    rate: u32,
    seq: u16,
    sent: usize,
    silent: bool,
    /// Decoded output, one frame per tick (silence when nothing came).
    heard: Vec<i16>,
    frames: Vec<OutFrame>,
}

impl Leg {
    fn new(id: u64, spec: CodecSpec, freq: f32) -> Leg {
        let rate = spec.kind.native_rate();
        Leg {
            id: ParticipantId(id),
            enc: spec.build(rate).unwrap(),
            dec: spec.build(rate).unwrap(),
            freq,
            amplitude: 8000.0,
            rate,
            seq: 0,
            sent: 0,
            silent: false,
            heard: vec![],
            frames: vec![],
        }
    }

    fn join(&self, room: &mut Room) {
        room.add_participant(self.id, ParticipantConfig::new(*self.enc.spec()))
            .unwrap();
    }

    /// Encodes and pushes the next 20 ms.
    fn send(&mut self, room: &mut Room, now: u64) -> PushOutcome {
        let n = frame_samples(self.rate);
        let amp = if self.silent { 0.0 } else { self.amplitude };
        let pcm = sine(self.freq, self.rate, amp, self.sent * n, n);
        let payload = self.enc.encode_vec(&pcm).unwrap();
        let ts = (self.sent as u32).wrapping_mul(self.enc.spec().kind.timestamp_step());
        let pkt = InPacket {
            payload_type: self.enc.spec().payload_type,
            seq: self.seq,
            timestamp: ts,
            marker: self.sent == 0,
            payload: &payload,
            audio_level: None,
        };
        self.seq = self.seq.wrapping_add(1);
        self.sent += 1;
        room.push_packet(self.id, pkt, now).unwrap()
    }

    /// Decodes this tick's audio frame for this leg (or silence).
    fn receive(&mut self, frames: &[(ParticipantId, OutFrame)]) {
        let n = frame_samples(self.rate);
        let mut got = false;
        for (id, f) in frames {
            if *id == self.id && f.payload_type == self.enc.spec().payload_type {
                let pcm = self.dec.decode_vec(&f.payload).unwrap();
                self.heard.extend_from_slice(&pcm[..n]);
                self.frames.push(f.clone());
                got = true;
            }
        }
        if !got {
            self.heard.extend(std::iter::repeat_n(0, n));
        }
    }

    /// Power of `freq` in the last `secs` seconds heard, relative to the
    /// power of a tone at this leg's amplitude (1.0 = same level).
    fn tone(&self, freq: f32, from_tick: usize, to_tick: usize) -> f32 {
        let n = frame_samples(self.rate);
        let window = &self.heard[from_tick * n..to_tick * n];
        goertzel(window, self.rate, freq) / (self.amplitude * self.amplitude / 4.0)
    }
}

/// Runs `ticks` ticks: every leg sends, the room ticks, every leg receives.
fn run(room: &mut Room, legs: &mut [Leg], ticks: usize, start_tick: usize) {
    for k in start_tick..start_tick + ticks {
        let now = k as u64 * 20;
        for leg in legs.iter_mut() {
            leg.send(room, now);
        }
        let frames: Vec<_> = room.tick(now).collect();
        for leg in legs.iter_mut() {
            leg.receive(&frames);
        }
    }
}

fn db(x: f32) -> f32 {
    10.0 * x.max(1e-12).log10()
}

// Tones chosen so no 2nd/3rd-order intermodulation product of two of them
// (µ-law is not linear) lands on the third: 440, 770, 1330 Hz.
const F: [f32; 3] = [440.0, 770.0, 1330.0];

#[test]
fn three_participants_each_hear_the_other_two_and_not_themselves() {
    let mut room = Room::new(RoomConfig::default()).unwrap();
    let mut legs: Vec<Leg> = (0..3)
        .map(|i| Leg::new(i as u64, CodecSpec::pcmu(), F[i]))
        .collect();
    legs.iter().for_each(|l| l.join(&mut room));
    run(&mut room, &mut legs, 100, 0);
    for (i, leg) in legs.iter().enumerate() {
        for (j, &f) in F.iter().enumerate() {
            let p = leg.tone(f, 50, 100);
            if i == j {
                // Own tone: at least 40 dB below the level it is sent at.
                assert!(
                    db(p) < -40.0,
                    "participant {i} hears itself at {} dB",
                    db(p)
                );
            } else {
                // Others: within 1 dB of the level they were sent at.
                assert!(
                    db(p).abs() < 1.0,
                    "participant {i} hears {f} Hz at {} dB",
                    db(p)
                );
            }
        }
    }
}

#[test]
fn mute_removes_a_tone_and_unmute_restores_it() {
    let mut room = Room::new(RoomConfig::default()).unwrap();
    let mut legs: Vec<Leg> = (0..3)
        .map(|i| Leg::new(i as u64, CodecSpec::pcmu(), F[i]))
        .collect();
    legs.iter().for_each(|l| l.join(&mut room));
    run(&mut room, &mut legs, 50, 0);
    room.set_mute(ParticipantId(0), true).unwrap();
    run(&mut room, &mut legs, 50, 50);
    room.set_mute(ParticipantId(0), false).unwrap();
    run(&mut room, &mut legs, 50, 100);
    for leg in &legs[1..] {
        assert!(db(leg.tone(F[0], 25, 50)).abs() < 1.0);
        assert!(
            db(leg.tone(F[0], 55, 100)) < -40.0,
            "muted tone still heard"
        );
        assert!(
            db(leg.tone(F[0], 105, 150)).abs() < 1.0,
            "unmuted tone not back"
        );
    }
    // The muted participant still hears the others.
    assert!(db(legs[0].tone(F[1], 55, 100)).abs() < 1.0);
}

#[test]
fn deaf_hears_silence_and_hold_gets_nothing() {
    let mut room = Room::new(RoomConfig::default()).unwrap();
    let mut legs: Vec<Leg> = (0..3)
        .map(|i| Leg::new(i as u64, CodecSpec::pcmu(), F[i]))
        .collect();
    legs.iter().for_each(|l| l.join(&mut room));
    room.set_deaf(ParticipantId(1), true).unwrap();
    room.set_hold(ParticipantId(2), true).unwrap();
    run(&mut room, &mut legs, 60, 0);
    // Deaf: frames keep coming, all silence; it is still heard by 0.
    assert_eq!(legs[1].frames.len(), 60);
    assert!(legs[1].heard.iter().all(|&s| s == 0));
    assert!(db(legs[0].tone(F[1], 30, 60)).abs() < 1.0);
    // Held: nothing sent to it, and it is not heard.
    assert!(legs[2].frames.is_empty());
    assert!(db(legs[0].tone(F[2], 30, 60)) < -40.0);
    assert_eq!(
        room.push_packet(
            ParticipantId(2),
            InPacket {
                payload_type: 0,
                seq: 0,
                timestamp: 0,
                marker: false,
                payload: &[0xFF; 160],
                audio_level: None
            },
            0
        )
        .unwrap(),
        PushOutcome::Ignored
    );
}

#[test]
fn volume_scales_what_the_others_hear() {
    let mut room = Room::new(RoomConfig::default()).unwrap();
    let mut legs: Vec<Leg> = (0..3)
        .map(|i| Leg::new(i as u64, CodecSpec::pcmu(), F[i]))
        .collect();
    legs.iter().for_each(|l| l.join(&mut room));
    room.set_volume(ParticipantId(0), 0.5).unwrap();
    run(&mut room, &mut legs, 60, 0);
    let p = db(legs[1].tone(F[0], 30, 60));
    assert!((p + 6.0).abs() < 1.0, "half volume heard at {p} dB");
}

#[test]
fn two_party_same_codec_relays_until_a_feature_needs_audio() {
    let mut room = Room::new(RoomConfig::default()).unwrap();
    let mut legs = vec![
        Leg::new(1, CodecSpec::pcmu(), F[0]),
        Leg::new(2, CodecSpec::pcmu(), F[1]),
    ];
    legs.iter().for_each(|l| l.join(&mut room));
    run(&mut room, &mut legs, 40, 0);
    assert!(room.is_relaying());
    assert!(db(legs[0].tone(F[1], 20, 40)).abs() < 1.0);
    assert!(db(legs[1].tone(F[0], 20, 40)).abs() < 1.0);
    // Relayed payloads are forwarded on receipt, no jitter-buffer delay:
    // the first packet (buffered before the first tick chose relaying) is
    // flushed at that tick, every later one goes out when pushed.
    assert_eq!(legs[0].frames.len(), 40);
    // Mute: mixing takes over, the muted side is not heard, the other still is.
    room.set_mute(ParticipantId(1), true).unwrap();
    run(&mut room, &mut legs, 40, 40);
    assert!(!room.is_relaying());
    assert!(db(legs[1].tone(F[0], 50, 80)) < -40.0);
    assert!(db(legs[0].tone(F[1], 50, 80)).abs() < 1.0);
    room.set_mute(ParticipantId(1), false).unwrap();
    run(&mut room, &mut legs, 40, 80);
    assert!(room.is_relaying());
    assert!(db(legs[1].tone(F[0], 90, 120)).abs() < 1.0);
    // Outgoing timestamps advance 160 per tick through mode changes.
    let ts: Vec<u32> = legs[0].frames.iter().map(|f| f.timestamp).collect();
    assert!(
        ts.windows(2)
            .all(|w| w[1].wrapping_sub(w[0]) % 160 == 0 && w[1] != w[0])
    );
    // Hold in relay mode: nothing sent to the held side, it is not heard.
    room.set_hold(ParticipantId(2), true).unwrap();
    let before = legs[1].frames.len();
    run(&mut room, &mut legs, 20, 120);
    assert_eq!(legs[1].frames.len(), before);
}

#[test]
fn opus_to_pcmu_call_mixes_at_8_khz_both_ways() {
    let mut room = Room::new(RoomConfig::default()).unwrap();
    let mut legs = vec![
        Leg::new(1, CodecSpec::opus(111), 600.0),
        Leg::new(2, CodecSpec::pcmu(), 1000.0),
    ];
    legs.iter().for_each(|l| l.join(&mut room));
    assert_eq!(room.mix_rate(), 8000);
    run(&mut room, &mut legs, 100, 0);
    assert!(!room.is_relaying());
    let (to_pcmu, to_opus) = (
        db(legs[1].tone(600.0, 50, 100)),
        db(legs[0].tone(1000.0, 50, 100)),
    );
    assert!(to_pcmu.abs() < 2.0, "Opus→PCMU tone at {to_pcmu} dB");
    assert!(to_opus.abs() < 2.0, "PCMU→Opus tone at {to_opus} dB");
    assert!(legs[0].frames.iter().all(|f| f.payload_type == 111));
    // A second Opus participant lifts the mix to 48 kHz.
    let third = Leg::new(3, CodecSpec::opus(111), 1500.0);
    third.join(&mut room);
    assert_eq!(room.mix_rate(), 48_000);
    let mut all = vec![legs.remove(0), legs.remove(0), third];
    run(&mut room, &mut all, 60, 100);
    assert!(db(all[2].tone(1000.0, 30, 60)).abs() < 2.0);
    assert!(db(all[2].tone(600.0, 30, 60)).abs() < 2.0);
    assert!(
        room.events()
            .any(|e| e == RoomEvent::MixRateChanged { rate: 48_000 })
    );
}

#[test]
fn large_room_shares_one_encoding_among_listeners() {
    let mut room = Room::new(RoomConfig::default()).unwrap();
    let mut legs: Vec<Leg> = (0..20)
        .map(|i| Leg::new(i, CodecSpec::pcmu(), 300.0 + 37.0 * i as f32))
        .collect();
    for (i, l) in legs.iter_mut().enumerate() {
        l.silent = i >= 2;
        l.join(&mut room);
    }
    for k in 0..30 {
        let now = k * 20;
        for l in legs.iter_mut() {
            l.send(&mut room, now);
        }
        let frames: Vec<_> = room.tick(now).collect();
        if k == 29 {
            let by_id: HashMap<ParticipantId, &OutFrame> =
                frames.iter().map(|(id, f)| (*id, f)).collect();
            // Talkers 0 and 1 get their own mixes; listeners share one buffer.
            let shared = by_id[&ParticipantId(5)].payload.as_ptr();
            for i in 2..20 {
                assert_eq!(by_id[&ParticipantId(i)].payload.as_ptr(), shared);
            }
            assert_ne!(by_id[&ParticipantId(0)].payload.as_ptr(), shared);
            assert_ne!(
                by_id[&ParticipantId(1)].payload,
                by_id[&ParticipantId(0)].payload
            );
        }
        for l in legs.iter_mut() {
            l.receive(&frames);
        }
    }
    // Listeners hear both talkers; talker 0 hears 1 but not itself.
    assert!(db(legs[7].tone(legs[0].freq, 15, 30)).abs() < 1.0);
    assert!(db(legs[7].tone(legs[1].freq, 15, 30)).abs() < 1.0);
    assert!(db(legs[0].tone(legs[0].freq, 15, 30)) < -40.0);
    assert!(db(legs[0].tone(legs[1].freq, 15, 30)).abs() < 1.0);
}

#[test]
fn large_room_mixes_only_the_loudest_talkers() {
    let cfg = RoomConfig {
        max_talkers: 2,
        mix_everyone_up_to: 3,
        ..RoomConfig::default()
    };
    let mut room = Room::new(cfg).unwrap();
    let mut legs: Vec<Leg> = (0..5)
        .map(|i| Leg::new(i, CodecSpec::pcmu(), 400.0 + 150.0 * i as f32))
        .collect();
    legs[0].amplitude = 2000.0; // the quietest of three talkers
    legs[3].silent = true;
    legs[4].silent = true;
    legs.iter().for_each(|l| l.join(&mut room));
    run(&mut room, &mut legs, 60, 0);
    // Listener 4 hears talkers 1 and 2, not the quiet talker 0.
    assert!(db(legs[4].tone(legs[1].freq, 30, 60)).abs() < 1.0);
    assert!(db(legs[4].tone(legs[2].freq, 30, 60)).abs() < 1.0);
    assert!(db(legs[4].tone(legs[0].freq, 30, 60) * (2000.0f32 / 8000.0).powi(-2)) < -30.0);
}

#[test]
fn audio_levels_let_a_large_room_skip_decoding_quiet_participants() {
    let cfg = RoomConfig {
        mix_everyone_up_to: 2,
        ..RoomConfig::default()
    };
    let mut room = Room::new(cfg).unwrap();
    let spec = CodecSpec::pcmu();
    for i in 0..3 {
        room.add_participant(ParticipantId(i), ParticipantConfig::new(spec))
            .unwrap();
    }
    // Participant 0 sends a loud payload but claims −90 dBov: never decoded, never a talker.
    for k in 0..40u16 {
        let now = k as u64 * 20;
        let pkt = InPacket {
            payload_type: 0,
            seq: k,
            timestamp: k as u32 * 160,
            marker: false,
            payload: &[0x80; 160],
            audio_level: Some(90),
        };
        room.push_packet(ParticipantId(0), pkt, now).unwrap();
        let _ = room.tick(now).count();
    }
    assert_eq!(room.is_talking(ParticipantId(0)), Some(false));
    assert!(
        !room
            .events()
            .any(|e| matches!(e, RoomEvent::TalkingStarted { .. }))
    );
}

#[test]
fn talker_and_membership_events() {
    let mut room = Room::new(RoomConfig::default()).unwrap();
    let mut legs = vec![
        Leg::new(1, CodecSpec::pcmu(), 500.0),
        Leg::new(2, CodecSpec::pcma(), 900.0),
    ];
    legs[1].silent = true;
    legs.iter().for_each(|l| l.join(&mut room));
    run(&mut room, &mut legs, 20, 0);
    legs[0].silent = true;
    run(&mut room, &mut legs, 40, 20);
    room.remove(ParticipantId(2)).unwrap();
    let events: Vec<RoomEvent> = room.events().collect();
    let kinds: Vec<String> = events
        .iter()
        .map(|e| match e {
            RoomEvent::Joined { participant } => format!("join {}", participant.0),
            RoomEvent::Left { participant } => format!("left {}", participant.0),
            RoomEvent::TalkingStarted {
                participant,
                level_dbov,
            } => {
                assert!(*level_dbov > -20.0 && *level_dbov < -5.0, "{level_dbov}");
                format!("talk {}", participant.0)
            }
            RoomEvent::TalkingStopped { participant } => format!("quiet {}", participant.0),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        vec!["join 1", "join 2", "talk 1", "quiet 1", "left 2"]
    );
    assert!(matches!(
        room.remove(ParticipantId(2)),
        Err(RoomError::Unknown(_))
    ));
}

#[test]
fn room_limits_and_duplicates() {
    let mut room = Room::new(RoomConfig {
        max_participants: 2,
        ..RoomConfig::default()
    })
    .unwrap();
    let cfg = ParticipantConfig::new(CodecSpec::pcmu());
    room.add_participant(ParticipantId(1), cfg).unwrap();
    assert!(matches!(
        room.add_participant(ParticipantId(1), cfg),
        Err(RoomError::Duplicate(_))
    ));
    room.add_participant(ParticipantId(2), cfg).unwrap();
    assert!(matches!(
        room.add_participant(ParticipantId(3), cfg),
        Err(RoomError::Full(2))
    ));
    assert!(matches!(
        room.add_player(ParticipantId(2), Box::new(Tone::beep())),
        Err(RoomError::Duplicate(_))
    ));
    assert!(
        Room::new(RoomConfig {
            mix_rate: Some(44_100),
            ..RoomConfig::default()
        })
        .is_err()
    );
}

#[test]
fn echo_room_plays_each_participant_back_after_the_delay() {
    let cfg = RoomConfig {
        echo_delay_ms: Some(200),
        ..RoomConfig::default()
    };
    let mut room = Room::new(cfg).unwrap();
    let mut legs = vec![
        Leg::new(1, CodecSpec::g722(), 1000.0),
        Leg::new(2, CodecSpec::pcmu(), 700.0),
    ];
    legs.iter().for_each(|l| l.join(&mut room));
    run(&mut room, &mut legs, 60, 0);
    // First sound: jitter delay (1 tick) + 200 ms echo delay = tick 11.
    let n = frame_samples(16_000);
    let first_loud = legs[0]
        .heard
        .chunks(n)
        .position(|f| mean_square(f) > 1e5)
        .unwrap();
    assert!(
        (11..=12).contains(&first_loud),
        "echo after {first_loud} ticks"
    );
    assert!(db(legs[0].tone(1000.0, 30, 60)).abs() < 1.5);
    // Nobody hears the other one.
    assert!(db(legs[0].tone(700.0, 30, 60)) < -40.0);
    assert!(db(legs[1].tone(700.0, 30, 60)).abs() < 1.0);
}

#[test]
fn players_are_heard_and_removed_when_finished() {
    let mut room = Room::new(RoomConfig::default()).unwrap();
    let mut legs = vec![Leg::new(1, CodecSpec::pcmu(), 500.0)];
    legs[0].silent = true;
    legs[0].join(&mut room);
    room.add_player(ParticipantId(100), Box::new(Tone::ringback_eu()))
        .unwrap();
    room.add_player(ParticipantId(101), Box::new(Tone::beep()))
        .unwrap();
    run(&mut room, &mut legs, 60, 0);
    // Ringback: 425 Hz during the first second.
    let n = 160;
    let first = &legs[0].heard[10 * n..50 * n];
    assert!(goertzel(first, 8000, 425.0) > 10.0 * goertzel(first, 8000, 880.0));
    // The beep ran its 150 ms and left.
    let events: Vec<_> = room.events().collect();
    assert!(events.contains(&RoomEvent::PlaybackFinished {
        participant: ParticipantId(101)
    }));
    room.remove(ParticipantId(100)).unwrap();
}

#[test]
fn join_beep_is_played_to_the_room() {
    let mut room = Room::new(RoomConfig {
        join_beep: true,
        ..RoomConfig::default()
    })
    .unwrap();
    let mut legs = vec![Leg::new(1, CodecSpec::pcmu(), 500.0)];
    legs[0].silent = true;
    legs[0].join(&mut room);
    run(&mut room, &mut legs, 10, 0);
    assert!(goertzel(&legs[0].heard[..160 * 8], 8000, 880.0) > 1e5);
}

/// A `Write + Seek` the test can read after the room dropped its box.
#[derive(Clone, Default)]
struct SharedBuf(Arc<Mutex<Cursor<Vec<u8>>>>);

impl std::io::Write for SharedBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().write(b)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl std::io::Seek for SharedBuf {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        self.0.lock().unwrap().seek(pos)
    }
}

fn wav_samples(buf: &SharedBuf) -> (u32, Vec<i16>) {
    let bytes = buf.0.lock().unwrap().get_ref().clone();
    assert_eq!(&bytes[..4], b"RIFF");
    let rate = u32::from_le_bytes(bytes[24..28].try_into().unwrap());
    let len = u32::from_le_bytes(bytes[40..44].try_into().unwrap()) as usize;
    assert_eq!(len, bytes.len() - 44);
    (
        rate,
        bytes[44..]
            .chunks(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]))
            .collect(),
    )
}

#[test]
fn recording_mixed_and_per_participant_tracks() {
    let mut room = Room::new(RoomConfig::default()).unwrap();
    let mut legs = vec![
        Leg::new(1, CodecSpec::pcmu(), 600.0),
        Leg::new(2, CodecSpec::g722(), 1200.0),
    ];
    legs.iter().for_each(|l| l.join(&mut room));
    let (mixed, track) = (SharedBuf::default(), SharedBuf::default());
    room.start_recording(Box::new(mixed.clone())).unwrap();
    room.record_participant(ParticipantId(2), Box::new(track.clone()))
        .unwrap();
    run(&mut room, &mut legs, 50, 0);
    assert!(!room.is_relaying());
    room.stop_recording().unwrap().unwrap();
    room.stop_participant_recording(ParticipantId(2))
        .unwrap()
        .unwrap();
    let (rate, mix) = wav_samples(&mixed);
    assert_eq!(rate, 8000);
    assert_eq!(mix.len(), 50 * 160);
    let tail = &mix[25 * 160..];
    let full = 8000.0f32 * 8000.0 / 4.0;
    assert!(db(goertzel(tail, 8000, 600.0) / full).abs() < 1.0);
    assert!(db(goertzel(tail, 8000, 1200.0) / full).abs() < 1.0);
    let (_, own) = wav_samples(&track);
    let tail = &own[25 * 160..];
    assert!(db(goertzel(tail, 8000, 1200.0) / full).abs() < 1.0);
    assert!(db(goertzel(tail, 8000, 600.0) / full) < -40.0);
}

#[test]
fn dtmf_is_reported_and_forwarded_rescaled_from_48000_to_8000() {
    let mut room = Room::new(RoomConfig::default()).unwrap();
    let browser = ParticipantConfig::new(CodecSpec::opus(111)).with_telephone_event(110, 48_000);
    let phone = ParticipantConfig {
        initial_timestamp: 5000,
        ..ParticipantConfig::new(CodecSpec::pcmu())
    }
    .with_telephone_event(101, 8000);
    room.add_participant(ParticipantId(1), browser).unwrap();
    room.add_participant(ParticipantId(2), phone).unwrap();
    let mut forwarded = vec![];
    let mut phone_audio_ts = vec![];
    for k in 0..20u32 {
        let now = k as u64 * 20;
        if (5..12).contains(&k) {
            // Digit 5 starting at browser timestamp 240000, 20 ms per packet, end sent 3 times.
            let (end, d) = if k >= 9 {
                (true, 4 * 960)
            } else {
                (false, (k - 4) * 960)
            };
            let rtp = (k as u16, 240_000, k == 5);
            assert_eq!(
                push_te(&mut room, 1, 110, rtp, (5, d as u16, end), now),
                PushOutcome::Dtmf
            );
        }
        for (id, f) in room.tick(now) {
            if id == ParticipantId(2) && f.payload_type == 101 {
                forwarded.push((
                    f.timestamp,
                    TelephoneEvent::parse(&f.payload).unwrap(),
                    f.marker,
                ));
            } else if id == ParticipantId(2) {
                phone_audio_ts.push((k, f.timestamp));
            }
        }
    }
    // Forwarded at the phone's 8 kHz clock: durations / 6, one timestamp for the event,
    // continuous with the phone's audio timeline (5000 + 160 per tick).
    // The event starts at the phone's next audio frame: tick 5.
    let start = 5000 + 160 * 5;
    let got: Vec<(u32, u16, bool, bool)> = forwarded
        .iter()
        .map(|(ts, e, m)| (*ts, e.duration, e.end, *m))
        .collect();
    assert_eq!(
        got,
        vec![
            (start, 160, false, true),
            (start, 320, false, false),
            (start, 480, false, false),
            (start, 640, false, false),
            (start, 640, true, false),
            (start, 640, true, false),
            (start, 640, true, false),
        ]
    );
    assert!(phone_audio_ts.iter().all(|&(k, ts)| ts == 5000 + 160 * k));
    // No voice while the digit is sent (as a phone does): ticks 5–8; the end
    // packet (tick 9) lets audio go again, on the same clock.
    let ticks: Vec<u32> = phone_audio_ts.iter().map(|&(k, _)| k).collect();
    assert_eq!(ticks, (0..5).chain(9..20).collect::<Vec<u32>>());
    let dtmf = dtmf_reports(&mut room);
    assert_eq!(
        dtmf,
        vec![RoomEvent::Dtmf {
            participant: ParticipantId(1),
            event: 5,
            digit: Some('5'),
            duration_ms: 80
        }]
    );
}

#[test]
fn a_renumbered_telephone_event_is_taken_with_either_number_and_sent_with_theirs() {
    // Participant 2 answered our offer's 101 with 100: it should send with
    // 101 (ours), some send with 100 (theirs); we send it 100.
    let mut room = Room::new(RoomConfig::default()).unwrap();
    let mut renumbered = ParticipantConfig::new(CodecSpec::pcmu());
    renumbered.telephone_event = Some(TelephoneEventSpec {
        payload_type: 100,
        receive_payload_type: 101,
        clock_rate: 8000,
    });
    let plain = ParticipantConfig::new(CodecSpec::pcmu()).with_telephone_event(101, 8000);
    room.add_participant(ParticipantId(1), plain).unwrap();
    room.add_participant(ParticipantId(2), renumbered).unwrap();
    for pt in [101, 100] {
        assert_eq!(
            push_te(
                &mut room,
                2,
                pt,
                (u16::from(pt), 0, true),
                (3, 800, true),
                0
            ),
            PushOutcome::Dtmf,
            "payload type {pt}"
        );
    }
    push_te(&mut room, 1, 101, (1, 0, true), (7, 800, true), 0);
    let mut to_2 = Vec::new();
    for k in 0..10u64 {
        for (id, f) in room.tick(k * 20) {
            if id == ParticipantId(2) && f.payload_type != 0 {
                to_2.push(f.payload_type);
            }
        }
    }
    assert!(
        !to_2.is_empty() && to_2.iter().all(|&pt| pt == 100),
        "{to_2:?}"
    );
}

#[test]
fn dtmf_from_a_muted_participant_is_reported_not_forwarded() {
    let mut room = two_phones();
    room.set_mute(ParticipantId(1), true).unwrap();
    push_te(&mut room, 1, 101, (1, 0, true), (11, 800, true), 0);
    assert!(room.tick(0).all(|(_, f)| f.payload_type != 101));
    assert!(room.events().any(|e| matches!(
        e,
        RoomEvent::Dtmf {
            digit: Some('#'),
            duration_ms: 100,
            ..
        }
    )));
}

#[test]
fn reordered_and_lost_input_still_gives_a_frame_every_tick() {
    let mut room = Room::new(RoomConfig::default()).unwrap();
    let mut a = Leg::new(1, CodecSpec::opus(111), 600.0);
    let mut b = Leg::new(2, CodecSpec::opus(111), 900.0);
    a.join(&mut room);
    b.join(&mut room);
    room.set_volume(ParticipantId(2), 0.9).unwrap(); // force mixing
    // Pre-encode a's packets, deliver them out of order with one lost.
    let payloads: Vec<Vec<u8>> = (0..60)
        .map(|k| {
            a.enc
                .encode_vec(&sine(600.0, 48_000, 8000.0, k * 960, 960))
                .unwrap()
        })
        .collect();
    let mut order: Vec<usize> = (0..60).filter(|&k| k != 30).collect();
    order.swap(10, 11);
    order.swap(40, 41);
    let mut got = 0;
    for (tick, &k) in order.iter().enumerate() {
        let now = tick as u64 * 20;
        let pkt = InPacket {
            payload_type: 111,
            seq: k as u16,
            timestamp: k as u32 * 960,
            marker: false,
            payload: &payloads[k],
            audio_level: None,
        };
        room.push_packet(ParticipantId(1), pkt, now).unwrap();
        b.send(&mut room, now);
        let frames: Vec<_> = room.tick(now).collect();
        if tick >= 2 {
            assert!(
                frames.iter().any(|(id, _)| *id == ParticipantId(2)),
                "no frame for b at tick {tick}"
            );
            got += 1;
        }
        b.receive(&frames);
    }
    assert_eq!(got, order.len() - 2);
    let st = room.jitter_stats(ParticipantId(1)).unwrap();
    assert_eq!(st.late, 0);
    assert!(st.lost >= 1);
    assert!(db(b.tone(600.0, 45, 58)).abs() < 2.0);
}

#[test]
fn forty_ms_packets_are_split_into_20_ms_frames() {
    let mut room = Room::new(RoomConfig::default()).unwrap();
    let mut listener = Leg::new(2, CodecSpec::pcma(), 500.0);
    listener.silent = true;
    listener.join(&mut room);
    room.add_participant(ParticipantId(1), ParticipantConfig::new(CodecSpec::pcmu()))
        .unwrap();
    let mut enc = CodecSpec::pcmu().build(8000).unwrap();
    for k in 0..100usize {
        let now = k as u64 * 20;
        if k % 2 == 0 {
            // One 40 ms packet every other tick.
            let pcm = sine(700.0, 8000, 8000.0, k * 160, 320);
            let mut payload = enc.encode_vec(&pcm[..160]).unwrap();
            payload.extend(enc.encode_vec(&pcm[160..]).unwrap());
            let pkt = InPacket {
                payload_type: 0,
                seq: (k / 2) as u16,
                timestamp: k as u32 * 160,
                marker: false,
                payload: &payload,
                audio_level: None,
            };
            assert_eq!(
                room.push_packet(ParticipantId(1), pkt, now).unwrap(),
                PushOutcome::Buffered
            );
        }
        listener.send(&mut room, now);
        let frames: Vec<_> = room.tick(now).collect();
        listener.receive(&frames);
    }
    assert!(db(listener.tone(700.0, 50, 100)).abs() < 1.0);
    assert_eq!(room.jitter_stats(ParticipantId(1)).unwrap().lost, 0);
}

#[test]
fn random_packets_never_panic_the_room() {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut room = Room::new(RoomConfig {
        mix_everyone_up_to: 2,
        ..RoomConfig::default()
    })
    .unwrap();
    let specs = [CodecSpec::opus(111), CodecSpec::pcmu(), CodecSpec::g722()];
    for (i, spec) in specs.iter().enumerate() {
        let cfg = ParticipantConfig::new(*spec).with_telephone_event(101, 8000);
        room.add_participant(ParticipantId(i as u64), cfg).unwrap();
    }
    for k in 0..3000u64 {
        let now = k * 7;
        for _ in 0..(next() % 4) {
            let len = (next() % 300) as usize;
            let payload: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let pt = [0u8, 9, 101, 111, 13][(next() % 5) as usize];
            let pkt = InPacket {
                payload_type: pt,
                seq: next() as u16,
                timestamp: if next() % 4 == 0 {
                    next() as u32
                } else {
                    k as u32 * 160
                },
                marker: next() % 2 == 0,
                payload: &payload,
                audio_level: (next() % 2 == 0).then(|| (next() % 128) as u8),
            };
            let _ = room.push_packet(ParticipantId(next() % 3), pkt, now);
        }
        if k % 3 == 0 {
            let _ = room.tick(now).count();
        }
    }
    let _ = room.events().count();
}

#[test]
fn relay_forwards_on_receipt_with_a_continuous_outgoing_clock() {
    let mut room = Room::new(RoomConfig::default()).unwrap();
    let cfg = |ts| ParticipantConfig {
        initial_timestamp: ts,
        ..ParticipantConfig::new(CodecSpec::pcmu()).with_telephone_event(101, 8000)
    };
    room.add_participant(ParticipantId(1), cfg(0)).unwrap();
    room.add_participant(ParticipantId(2), cfg(90_000)).unwrap();
    let push = |room: &mut Room, seq: u16, ts: u32, now: u64| {
        let payload = [0x55u8; 160];
        let pkt = InPacket {
            payload_type: 0,
            seq,
            timestamp: 7_000 + ts,
            marker: false,
            payload: &payload,
            audio_level: None,
        };
        let outcome = room.push_packet(ParticipantId(1), pkt, now).unwrap();
        let out: Vec<(ParticipantId, OutFrame)> = room.drain_output().collect();
        (outcome, out)
    };
    // Relaying starts at the first tick; from then on a packet goes out when
    // pushed, and the room needs a tick only every RELAY_TICK_MS.
    assert_eq!(room.tick_interval_ms(), 20);
    assert!(room.tick(0).next().is_none());
    assert!(room.is_relaying());
    assert_eq!(room.tick_interval_ms(), RELAY_TICK_MS);
    let mut sent = vec![];
    for k in 0..5u16 {
        let (outcome, out) = push(&mut room, k, k as u32 * 160, 20 * k as u64 + 5);
        assert_eq!(outcome, PushOutcome::Relayed);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, ParticipantId(2));
        sent.push(out[0].1.clone());
        assert_eq!(room.tick(20 * (k as u64 + 1)).count(), 0);
    }
    // On participant 2's clock, continuing from where the tick clock was.
    let ts: Vec<u32> = sent.iter().map(|f| f.timestamp).collect();
    assert_eq!(ts, vec![90_160, 90_320, 90_480, 90_640, 90_800]);
    assert!(sent[0].marker && !sent[1].marker);
    assert_eq!(&sent[0].payload[..], &[0x55u8; 160][..]);
    // Packet 5 is lost, 7 arrives before 6: 7 keeps its place in time, 6 is too late.
    let (_, out) = push(&mut room, 7, 7 * 160, 145);
    assert_eq!(out[0].1.timestamp, 90_160 + 7 * 160);
    let (outcome, out) = push(&mut room, 6, 6 * 160, 146);
    assert_eq!((outcome, out.len()), (PushOutcome::Late, 0));
    room.tick(160).for_each(drop);
    // DTMF in relay mode goes out at once, on the audio clock.
    let rtp = (8, 7_000 + 8 * 160, true);
    assert_eq!(
        push_te(&mut room, 1, 101, rtp, (1, 160, false), 165),
        PushOutcome::Dtmf
    );
    let dtmf: Vec<_> = room.drain_output().collect();
    assert_eq!(dtmf.len(), 1);
    assert_eq!(dtmf[0].1.payload_type, 101);
    assert_eq!(dtmf[0].1.timestamp, 90_160 + 8 * 160);
    // While the digit is sent, audio is not relayed to that side; its end
    // packet lets audio through again.
    let (outcome, out) = push(&mut room, 8, 8 * 160, 166);
    assert_eq!((outcome, out.len()), (PushOutcome::Ignored, 0));
    push_te(
        &mut room,
        1,
        101,
        (rtp.0, rtp.1, false),
        (1, 160, true),
        167,
    );
    assert_eq!(room.drain_output().count(), 1);
    let (outcome, out) = push(&mut room, 9, 9 * 160, 168);
    assert_eq!((outcome, out.len()), (PushOutcome::Relayed, 1));
    // Mute switches to mixing at once (the packet is buffered, not relayed);
    // the mixed frames continue the clock 160 per tick after the last relayed one.
    room.set_mute(ParticipantId(2), true).unwrap();
    assert_eq!(room.tick_interval_ms(), 20);
    let (outcome, out) = push(&mut room, 10, 10 * 160, 185);
    assert_eq!((outcome, out.len()), (PushOutcome::Buffered, 0));
    let mut mixed = vec![];
    for k in 0..3u64 {
        for (id, f) in room.tick(200 + 20 * k) {
            if id == ParticipantId(2) && f.payload_type == 0 {
                mixed.push(f.timestamp);
            }
        }
    }
    assert!(!room.is_relaying());
    let last_relayed = 90_160 + 9 * 160;
    assert!(mixed[0].wrapping_sub(last_relayed) as i32 > 0);
    assert_eq!((mixed[0] - last_relayed) % 160, 0);
    assert!(mixed.windows(2).all(|w| w[1] == w[0] + 160));
}

#[test]
fn a_digit_from_signalling_is_played_to_the_other_side_as_rfc_4733() {
    let mut room = Room::new(RoomConfig::default()).unwrap();
    let browser = ParticipantConfig::new(CodecSpec::opus(111)).with_telephone_event(110, 48_000);
    let phone = ParticipantConfig {
        initial_timestamp: 5000,
        ..ParticipantConfig::new(CodecSpec::pcmu())
    }
    .with_telephone_event(101, 8000);
    room.add_participant(ParticipantId(1), browser).unwrap();
    room.add_participant(ParticipantId(2), phone).unwrap();
    for k in 0..3u64 {
        let _ = room.tick(k * 20).count();
    }
    // Digit '7' for 100 ms from the browser's INFO.
    room.inject_dtmf(ParticipantId(1), 7, 100).unwrap();
    let mut events = vec![];
    for k in 3..12u64 {
        for (id, f) in room.tick(k * 20) {
            assert!(
                !(id == ParticipantId(1) && f.payload_type == 110),
                "the sender does not get its own digit"
            );
            if id == ParticipantId(2) && f.payload_type == 101 {
                events.push((
                    f.timestamp,
                    TelephoneEvent::parse(&f.payload).unwrap(),
                    f.marker,
                ));
            }
        }
    }
    let durations: Vec<(u16, bool)> = events.iter().map(|(_, e, _)| (e.duration, e.end)).collect();
    // 20 ms steps at 8 kHz up to 800 units (100 ms), then three end packets.
    assert_eq!(
        durations,
        [
            (160, false),
            (320, false),
            (480, false),
            (640, false),
            (800, true),
            (800, true),
            (800, true)
        ]
    );
    assert!(events.iter().all(|(_, e, _)| e.event == 7));
    assert!(
        events.iter().all(|(ts, _, _)| *ts == events[0].0),
        "one timestamp per event"
    );
    assert!(
        events[0].2 && !events[1].2,
        "marker on the first packet only"
    );
}

/// A sender starved for 400 ms in the middle of a digit (late packets, as on
/// a loaded machine): the digit is reported once, when its end packet
/// comes, with its whole duration, not cut at the gap.
#[test]
fn a_digit_with_a_gap_in_its_packets_is_reported_once_whole() {
    let mut room = two_phones();
    // (time ms, duration in 8 kHz units, end)
    let packets = [
        (0u64, 160u16, false),
        (20, 320, false),
        (420, 480, false),
        (440, 1600, true),
        (460, 1600, true),
        (480, 1600, true),
    ];
    let mut next = packets.iter().peekable();
    for k in 0..40u64 {
        let now = k * 20;
        while let Some(&&(at, duration, end)) = next.peek()
            && at <= now
        {
            next.next();
            let rtp = (at as u16, 8000, at == 0);
            push_te(&mut room, 1, 101, rtp, (3, duration, end), now);
        }
        room.tick(now).for_each(drop);
    }
    let dtmf = dtmf_reports(&mut room);
    assert_eq!(
        dtmf,
        vec![RoomEvent::Dtmf {
            participant: ParticipantId(1),
            event: 3,
            digit: Some('3'),
            duration_ms: 200
        }]
    );
}

/// INFO digits that arrive faster than they last (a burst after a stall)
/// are played one after the other, each whole with its end packets, 40 ms
/// apart (audio in between): a new digit does not cut the one being played.
#[test]
fn digits_from_signalling_in_a_burst_are_played_whole_in_order() {
    let mut room = Room::new(RoomConfig::default()).unwrap();
    // A browser (mixing, so the phone gets a frame every tick) and a phone.
    let browser = ParticipantConfig::new(CodecSpec::opus(111)).with_telephone_event(110, 48_000);
    room.add_participant(ParticipantId(1), browser).unwrap();
    room.add_participant(ParticipantId(2), phone_with_te())
        .unwrap();
    let _ = room.tick(0).count();
    for event in [1, 2, 2] {
        room.inject_dtmf(ParticipantId(1), event, 60).unwrap();
    }
    // (tick, timestamp, event, duration, end) of what the phone gets.
    let mut got = vec![];
    let mut audio_ticks = vec![];
    for k in 1..30u64 {
        for (id, f) in room.tick(k * 20) {
            if id != ParticipantId(2) {
                continue;
            }
            if f.payload_type == 101 {
                let e = TelephoneEvent::parse(&f.payload).unwrap();
                got.push((k, f.timestamp, e.event, e.duration, e.end));
            } else {
                audio_ticks.push(k);
            }
        }
    }
    let ends: Vec<(u8, u16)> = got.iter().filter(|g| g.4).map(|g| (g.2, g.3)).collect();
    // 60 ms = 480 units each, three end packets each, in order.
    assert_eq!(
        ends,
        [(1, 480); 3]
            .into_iter()
            .chain([(2, 480); 6])
            .collect::<Vec<_>>()
    );
    let starts: Vec<(u64, u32)> = got
        .iter()
        .filter(|g| g.3 == 160)
        .map(|g| (g.0, g.1))
        .collect();
    assert_eq!(starts.len(), 3, "{got:?}");
    for w in starts.windows(2) {
        // Three ticks per 60 ms digit, then two without (40 ms): the next
        // starts 5 ticks on, with that tick's timestamp.
        assert_eq!(w[1].0, w[0].0 + 5, "{got:?}");
        assert_eq!(w[1].1, w[0].1 + 5 * 160, "its own timestamp: {got:?}");
        // Audio in the gap.
        for k in w[0].0 + 3..w[1].0 {
            assert!(
                audio_ticks.contains(&k),
                "no audio at tick {k}: {audio_ticks:?}"
            );
        }
    }
    // No audio while a digit plays; audio again after the last one.
    assert!(
        !audio_ticks
            .iter()
            .any(|k| got.iter().any(|g| g.0 == *k && !g.4))
    );
    let last = got.last().unwrap().0;
    assert!(audio_ticks.contains(&(last + 1)) && audio_ticks.contains(&29));
}

/// The digits from signalling a participant queued for the others are
/// dropped when it mutes, holds or leaves; the one being played is finished.
#[test]
fn queued_digits_are_dropped_when_their_sender_mutes_holds_or_leaves() {
    for action in ["mute", "hold", "leave"] {
        let mut room = Room::new(RoomConfig {
            dtmf_forwarding: DtmfForwarding::Always,
            ..RoomConfig::default()
        })
        .unwrap();
        let browser =
            ParticipantConfig::new(CodecSpec::opus(111)).with_telephone_event(110, 48_000);
        room.add_participant(ParticipantId(1), browser).unwrap();
        room.add_participant(ParticipantId(2), phone_with_te())
            .unwrap();
        room.add_participant(ParticipantId(3), phone_with_te())
            .unwrap();
        let _ = room.tick(0).count();
        // Participant 3 sends one digit, participant 1 a burst of three.
        room.inject_dtmf(ParticipantId(3), 9, 60).unwrap();
        for event in [1, 2, 3] {
            room.inject_dtmf(ParticipantId(1), event, 60).unwrap();
        }
        // (event, end) of what participant 2 gets.
        let mut got = vec![];
        for k in 1..40u64 {
            if k == 2 {
                match action {
                    "mute" => room.set_mute(ParticipantId(1), true).unwrap(),
                    "hold" => room.set_hold(ParticipantId(1), true).unwrap(),
                    _ => room.remove(ParticipantId(1)).unwrap(),
                }
            }
            for (id, f) in room.tick(k * 20) {
                if id == ParticipantId(2) && f.payload_type == 101 {
                    let e = TelephoneEvent::parse(&f.payload).unwrap();
                    got.push((e.event, e.end));
                }
            }
        }
        let ends: Vec<u8> = got.iter().filter(|g| g.1).map(|g| g.0).collect();
        // 9 (from participant 3) was being played when participant 1 acted
        // and ends whole (three end packets); 1's digits, queued behind it,
        // are gone.
        assert_eq!(ends, [9, 9, 9], "{action}: {got:?}");
    }
}

/// Hold ends the digit being played to the held participant with its end
/// packets and drops the queued ones.
#[test]
fn hold_ends_a_digit_from_signalling_and_drops_the_queue() {
    let mut room = two_phones();
    let _ = room.tick(0).count();
    room.inject_dtmf(ParticipantId(1), 5, 200).unwrap();
    room.inject_dtmf(ParticipantId(1), 6, 200).unwrap();
    let mut got = vec![];
    for k in 1..30u64 {
        if k == 3 {
            room.set_hold(ParticipantId(2), true).unwrap();
        }
        for (id, f) in room.tick(k * 20) {
            if id == ParticipantId(2) && f.payload_type == 101 {
                let e = TelephoneEvent::parse(&f.payload).unwrap();
                got.push((e.event, e.duration, e.end));
            }
        }
    }
    assert_eq!(
        got,
        [
            (5, 160, false),
            (5, 320, false),
            (5, 320, true),
            (5, 320, true),
            (5, 320, true)
        ]
    );
}

/// A phone: PCMU with telephone-event 101 at 8 kHz.
fn phone_with_te() -> ParticipantConfig {
    ParticipantConfig::new(CodecSpec::pcmu()).with_telephone_event(101, 8000)
}

/// A room with two such phones, participants 1 and 2.
fn two_phones() -> Room {
    let mut room = Room::new(RoomConfig::default()).unwrap();
    room.add_participant(ParticipantId(1), phone_with_te())
        .unwrap();
    room.add_participant(ParticipantId(2), phone_with_te())
        .unwrap();
    room
}

/// The DTMF reports among the room's queued events.
fn dtmf_reports(room: &mut Room) -> Vec<RoomEvent> {
    room.events()
        .filter(|e| matches!(e, RoomEvent::Dtmf { .. }))
        .collect()
}

/// Pushes one RFC 4733 packet (volume 10) from participant `id` at
/// `now_ms`: payload type `pt`, RTP `(seq, timestamp, marker)` and
/// `(event, duration, end)`.
fn push_te(
    room: &mut Room,
    id: u64,
    pt: u8,
    (seq, timestamp, marker): (u16, u32, bool),
    (event, duration, end): (u8, u16, bool),
    now_ms: u64,
) -> PushOutcome {
    let ev = TelephoneEvent {
        event,
        end,
        volume: 10,
        duration,
    };
    let pkt = InPacket {
        payload_type: pt,
        seq,
        timestamp,
        marker,
        payload: &ev.to_bytes(),
        audio_level: None,
    };
    room.push_packet(ParticipantId(id), pkt, now_ms).unwrap()
}

/// A renegotiation switches a participant's codec in place (the trunk's
/// 2xx answered PCMA after a 183 in PCMU): relaying stops, the room
/// transcodes both ways, mute carries over, and the outgoing clock goes on.
#[test]
fn a_participant_switches_codec_in_place() {
    let mut room = Room::new(RoomConfig::default()).unwrap();
    let mut legs = vec![
        Leg::new(1, CodecSpec::pcmu(), F[0]),
        Leg::new(2, CodecSpec::pcmu(), F[1]),
    ];
    legs.iter().for_each(|l| l.join(&mut room));
    run(&mut room, &mut legs, 40, 0);
    assert!(room.is_relaying());
    let last_ts = legs[1].frames.last().unwrap().timestamp;
    // The same codec again: nothing changes.
    room.reconfigure(ParticipantId(2), ParticipantConfig::new(CodecSpec::pcmu()))
        .unwrap();
    // Participant 2 now speaks PCMA: its new leg encodes and decodes PCMA.
    room.reconfigure(ParticipantId(2), ParticipantConfig::new(CodecSpec::pcma()))
        .unwrap();
    legs[1] = Leg::new(2, CodecSpec::pcma(), F[1]);
    run(&mut room, &mut legs, 60, 40);
    assert!(!room.is_relaying());
    let (to_pcma, to_pcmu) = (
        db(legs[1].tone(F[0], 20, 60)),
        db(legs[0].tone(F[1], 60, 100)),
    );
    assert!(to_pcma.abs() < 2.0, "PCMU→PCMA at {to_pcma} dB");
    assert!(to_pcmu.abs() < 2.0, "PCMA→PCMU at {to_pcmu} dB");
    assert!(legs[1].frames.iter().all(|f| f.payload_type == 8));
    // Its timestamps continue from where the PCMU stream left them.
    let first = legs[1].frames[0].timestamp;
    assert!(
        first.wrapping_sub(last_ts) < 160 * 10,
        "{last_ts} then {first}"
    );
    // Mute carries over a switch back.
    room.set_mute(ParticipantId(2), true).unwrap();
    room.reconfigure(ParticipantId(2), ParticipantConfig::new(CodecSpec::pcmu()))
        .unwrap();
    legs[1] = Leg::new(2, CodecSpec::pcmu(), F[1]);
    run(&mut room, &mut legs, 40, 100);
    assert!(db(legs[0].tone(F[1], 120, 140)) < -40.0);
    assert!(matches!(
        room.reconfigure(ParticipantId(9), ParticipantConfig::new(CodecSpec::pcmu())),
        Err(RoomError::Unknown(ParticipantId(9)))
    ));
}

/// A codec switch loses no digit: the one being played to the switching
/// participant ends with end packets, the ones queued for it follow, and
/// the ones it sent by INFO still reach the other (all three were once
/// dropped).
#[test]
fn a_codec_switch_keeps_the_digits_in_flight() {
    let mut room = two_phones();
    // Two digits for participant 2 (from 1), two from 2 for participant 1.
    room.inject_dtmf(ParticipantId(1), 1, 200).unwrap();
    room.inject_dtmf(ParticipantId(1), 2, 200).unwrap();
    room.inject_dtmf(ParticipantId(2), 3, 200).unwrap();
    room.inject_dtmf(ParticipantId(2), 4, 200).unwrap();
    let mut events: HashMap<u64, Vec<TelephoneEvent>> = HashMap::new();
    let mut collect = |room: &mut Room, from: u64, to: u64| {
        for k in from..to {
            for (id, f) in room.tick(k * 20) {
                if f.payload_type == 101 {
                    events
                        .entry(id.0)
                        .or_default()
                        .push(TelephoneEvent::parse(&f.payload).unwrap());
                }
            }
        }
    };
    collect(&mut room, 0, 3);
    room.reconfigure(
        ParticipantId(2),
        ParticipantConfig::new(CodecSpec::pcma()).with_telephone_event(101, 8000),
    )
    .unwrap();
    collect(&mut room, 3, 60);
    let digits = |id: u64| {
        let mut seen: Vec<(u8, bool)> = Vec::new();
        for e in &events[&id] {
            if seen.last() != Some(&(e.event, e.end)) {
                seen.push((e.event, e.end));
            }
        }
        seen
    };
    assert_eq!(
        digits(2),
        [(1, false), (1, true), (2, false), (2, true)],
        "to the switching participant"
    );
    assert_eq!(
        digits(1),
        [(3, false), (3, true), (4, false), (4, true)],
        "from it"
    );
}

/// A switch to a configuration without telephone-event drops the digits
/// waiting for that participant: nothing could ever play them, and the
/// room stayed on 20 ms ticks for them (relaying never resumed).
#[test]
fn a_switch_without_telephone_event_drops_the_digits_waiting() {
    let mut room = two_phones();
    room.inject_dtmf(ParticipantId(1), 1, 200).unwrap();
    room.inject_dtmf(ParticipantId(1), 2, 200).unwrap();
    for k in 0..3 {
        room.tick(k * 20).for_each(drop);
    }
    for id in [1, 2] {
        room.reconfigure(ParticipantId(id), ParticipantConfig::new(CodecSpec::pcma()))
            .unwrap();
    }
    for k in 3..60 {
        for (_, f) in room.tick(k * 20) {
            assert_ne!(f.payload_type, 101, "no telephone-event any more");
        }
    }
    assert_eq!(room.tick_interval_ms(), RELAY_TICK_MS, "relaying again");
}

/// 30 ms and 10 ms G.711 packets (`a=ptime:30`, `a=ptime:10`) are cut on
/// the 20 ms grid and joined across packets: the tone comes through whole
/// (a 30 ms packet was once split into 20 + 10 ms frames off the grid).
#[test]
fn thirty_and_ten_ms_packets_are_reframed_to_20_ms() {
    for ms in [30usize, 10] {
        let mut room = Room::new(RoomConfig::default()).unwrap();
        let mut listener = Leg::new(2, CodecSpec::pcma(), 500.0);
        listener.silent = true;
        listener.join(&mut room);
        room.add_participant(ParticipantId(1), ParticipantConfig::new(CodecSpec::pcmu()))
            .unwrap();
        let mut enc = CodecSpec::pcmu().build(8000).unwrap();
        // G.711 is one byte per sample: encode the stream, then cut it.
        let stream: Vec<u8> = (0..160)
            .flat_map(|f| {
                enc.encode_vec(&sine(700.0, 8000, 8000.0, f * 160, 160))
                    .unwrap()
            })
            .collect();
        let per_packet = ms * 8;
        let mut sent = 0usize;
        let mut seq = 0u16;
        for k in 0..150usize {
            let now = k as u64 * 20;
            // Send every packet due by the end of this tick.
            while (sent + per_packet) * 20 <= (k + 1) * 160 * 20 {
                let payload = &stream[sent..sent + per_packet];
                let pkt = InPacket {
                    payload_type: 0,
                    seq,
                    timestamp: 1000 + sent as u32,
                    marker: false,
                    payload,
                    audio_level: None,
                };
                room.push_packet(ParticipantId(1), pkt, now).unwrap();
                seq = seq.wrapping_add(1);
                sent += per_packet;
            }
            listener.send(&mut room, now);
            let frames: Vec<_> = room.tick(now).collect();
            listener.receive(&frames);
        }
        let level = db(listener.tone(700.0, 60, 140));
        assert!(level.abs() < 1.0, "{ms} ms packets: tone at {level} dB");
        let stats = room.jitter_stats(ParticipantId(1)).unwrap();
        assert_eq!(stats.lost, 0, "{ms} ms packets: {stats:?}");
    }
}
