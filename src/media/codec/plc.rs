//! Packet-loss concealment for codecs without their own: repeat the last good
//! frame, fading out over three frames, then silence.

/// Gain at the start of the 1st, 2nd and 3rd concealed frame (Q15), each
/// ramping to the next; the 3rd ends at 0 and later frames are silent.
const FADE: [i32; 3] = [32768, 21845, 10923];

/// Remembers the last decoded frame and replays it attenuated on loss.
#[derive(Debug, Clone)]
pub struct RepeatConcealer {
    last: Vec<i16>,
    lost_run: usize,
}

impl RepeatConcealer {
    /// A concealer for frames of `frame_len` samples.
    pub fn new(frame_len: usize) -> Self {
        RepeatConcealer {
            last: vec![0; frame_len],
            lost_run: 0,
        }
    }

    /// Records a correctly decoded frame (ends any loss run).
    pub fn remember(&mut self, frame: &[i16]) {
        let n = frame.len().min(self.last.len());
        self.last[..n].copy_from_slice(&frame[..n]);
        self.last[n..].fill(0);
        self.lost_run = 0;
    }

    /// Writes one concealment frame into `out` (which must be a frame long),
    /// ramping the gain linearly so no step is audible.
    pub fn conceal(&mut self, out: &mut [i16]) {
        let n = out.len().min(self.last.len());
        let from = FADE.get(self.lost_run).copied().unwrap_or(0);
        let to = FADE.get(self.lost_run + 1).copied().unwrap_or(0);
        self.lost_run = self.lost_run.saturating_add(1);
        if from == 0 {
            out.fill(0);
            return;
        }
        for (i, (o, &s)) in out.iter_mut().zip(&self.last[..n]).enumerate() {
            let g = from + (to - from) * i as i32 / n as i32;
            *o = ((s as i32 * g) >> 15) as i16;
        }
        out[n..].fill(0);
    }

    /// Forgets the remembered frame.
    pub fn reset(&mut self) {
        self.last.fill(0);
        self.lost_run = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_with_fade_then_silence() {
        let mut plc = RepeatConcealer::new(4);
        plc.remember(&[1000, 1000, 1000, 1000]);
        let mut out = [0i16; 4];
        plc.conceal(&mut out);
        assert_eq!(out[0], 1000);
        assert!(out[3] < 1000 && out[3] > 600);
        let mut peaks = vec![];
        for _ in 0..4 {
            plc.conceal(&mut out);
            peaks.push(out[0]);
        }
        assert!(peaks[0] > peaks[1] && peaks[1] > 0);
        assert_eq!(&peaks[2..], &[0, 0]);
        plc.remember(&[5, 5, 5, 5]);
        plc.conceal(&mut out);
        assert_eq!(out[0], 5);
    }
}
