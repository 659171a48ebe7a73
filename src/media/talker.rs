//! Talker detection: frame energy against a threshold, a short attack and a
//! hangover so speech pauses between words do not flap the state.

use super::dsp::{dbov, mean_square_from_dbov};

/// Talker detection settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TalkerConfig {
    /// Level a frame must exceed to count as speech, dBov.
    pub threshold_dbov: f32,
    /// Consecutive loud frames before talking starts.
    pub attack_frames: u32,
    /// Quiet time before talking stops, ms.
    pub hangover_ms: u32,
}

impl Default for TalkerConfig {
    fn default() -> Self {
        TalkerConfig {
            threshold_dbov: -45.0,
            attack_frames: 2,
            hangover_ms: 500,
        }
    }
}

/// A change of talking state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TalkerChange {
    /// Started talking.
    Started,
    /// Stopped talking (hangover elapsed).
    Stopped,
}

/// Per-participant detector, fed one 20 ms frame level at a time.
#[derive(Debug, Clone)]
pub struct TalkerDetector {
    threshold_ms: f32,
    attack: u32,
    hangover_frames: u32,
    loud_run: u32,
    quiet_run: u32,
    talking: bool,
    /// Smoothed level (mean square), for ranking talkers.
    level: f32,
}

impl TalkerDetector {
    /// A detector that starts silent.
    pub fn new(cfg: TalkerConfig) -> Self {
        TalkerDetector {
            threshold_ms: mean_square_from_dbov(cfg.threshold_dbov),
            attack: cfg.attack_frames.max(1),
            hangover_frames: (cfg.hangover_ms / crate::media::FRAME_MS).max(1),
            loud_run: 0,
            quiet_run: 0,
            talking: false,
            level: 0.0,
        }
    }

    /// Whether a frame of this mean square counts as speech.
    pub fn is_loud(&self, mean_square: f32) -> bool {
        mean_square > self.threshold_ms
    }

    /// Feeds the mean square of one frame; reports a state change.
    pub fn update(&mut self, mean_square: f32) -> Option<TalkerChange> {
        self.level = 0.7 * self.level + 0.3 * mean_square;
        if self.is_loud(mean_square) {
            self.loud_run += 1;
            self.quiet_run = 0;
            if !self.talking && self.loud_run >= self.attack {
                self.talking = true;
                return Some(TalkerChange::Started);
            }
        } else {
            self.loud_run = 0;
            self.quiet_run += 1;
            if self.talking && self.quiet_run >= self.hangover_frames {
                self.talking = false;
                return Some(TalkerChange::Stopped);
            }
        }
        None
    }

    /// Forces the silent state (mute, hold), reporting `Stopped` if it was talking.
    pub fn silence(&mut self) -> Option<TalkerChange> {
        self.loud_run = 0;
        self.quiet_run = 0;
        self.level = 0.0;
        std::mem::replace(&mut self.talking, false).then_some(TalkerChange::Stopped)
    }

    /// Currently talking.
    pub fn talking(&self) -> bool {
        self.talking
    }

    /// Smoothed level, dBov.
    pub fn level_dbov(&self) -> f32 {
        dbov(self.level)
    }

    /// Smoothed level as a mean square (for ranking).
    pub fn level(&self) -> f32 {
        self.level
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attack_and_hangover() {
        let mut d = TalkerDetector::new(TalkerConfig::default());
        let loud = mean_square_from_dbov(-20.0);
        let quiet = mean_square_from_dbov(-70.0);
        assert_eq!(d.update(loud), None);
        assert_eq!(d.update(loud), Some(TalkerChange::Started));
        // A 200 ms pause does not stop the talker…
        for _ in 0..10 {
            assert_eq!(d.update(quiet), None);
        }
        assert_eq!(d.update(loud), None);
        // …500 ms does.
        let changes: Vec<_> = (0..25).filter_map(|_| d.update(quiet)).collect();
        assert_eq!(changes, vec![TalkerChange::Stopped]);
        assert!(!d.talking());
        assert_eq!(d.silence(), None);
    }
}
