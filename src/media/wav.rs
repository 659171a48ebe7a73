//! Minimal WAV (RIFF, 16-bit PCM, mono) writer over any `Write + Seek`.
//!
//! The header is written first with zero sizes and patched by
//! [`WavWriter::finish`]; samples are converted through a reusable buffer.

use std::io::{self, Seek, SeekFrom, Write};

/// Writes a mono 16-bit PCM WAV stream.
#[derive(Debug)]
pub struct WavWriter<W: Write + Seek> {
    inner: W,
    rate: u32,
    data_bytes: u32,
    buf: Vec<u8>,
}

/// Bytes before the sample data.
const HEADER_LEN: u32 = 44;

impl<W: Write + Seek> WavWriter<W> {
    /// Starts a file at `rate` Hz, writing the header.
    pub fn new(mut inner: W, rate: u32) -> io::Result<Self> {
        inner.write_all(&header(rate, 0))?;
        Ok(WavWriter {
            inner,
            rate,
            data_bytes: 0,
            buf: Vec::new(),
        })
    }

    /// Sample rate of the file.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Appends samples.
    pub fn write_samples(&mut self, samples: &[i16]) -> io::Result<()> {
        let bytes = samples.len() as u64 * 2;
        if self.data_bytes as u64 + bytes > (u32::MAX - HEADER_LEN) as u64 {
            return Err(io::Error::other("WAV file would exceed 4 GiB"));
        }
        self.buf.clear();
        self.buf
            .extend(samples.iter().flat_map(|s| s.to_le_bytes()));
        self.inner.write_all(&self.buf)?;
        self.data_bytes += bytes as u32;
        Ok(())
    }

    /// Patches the sizes into the header, flushes, and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        let end = self.inner.stream_position()?;
        self.inner.seek(SeekFrom::Start(
            end - (HEADER_LEN as u64 + self.data_bytes as u64),
        ))?;
        self.inner.write_all(&header(self.rate, self.data_bytes))?;
        self.inner.seek(SeekFrom::Start(end))?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

fn header(rate: u32, data_bytes: u32) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    let mut put = |at: usize, b: &[u8]| h[at..at + b.len()].copy_from_slice(b);
    put(0, b"RIFF");
    put(4, &(36 + data_bytes).to_le_bytes());
    put(8, b"WAVEfmt ");
    put(16, &16u32.to_le_bytes());
    put(20, &1u16.to_le_bytes()); // PCM
    put(22, &1u16.to_le_bytes()); // mono
    put(24, &rate.to_le_bytes());
    put(28, &(rate * 2).to_le_bytes());
    put(32, &2u16.to_le_bytes()); // block align
    put(34, &16u16.to_le_bytes()); // bits per sample
    put(36, b"data");
    put(40, &data_bytes.to_le_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn writes_a_valid_header_and_samples() {
        let mut w = WavWriter::new(Cursor::new(Vec::new()), 16_000).unwrap();
        w.write_samples(&[1, -2, 3]).unwrap();
        w.write_samples(&[i16::MIN]).unwrap();
        let bytes = w.finish().unwrap().into_inner();
        assert_eq!(bytes.len(), 44 + 8);
        assert_eq!(&bytes[0..4], b"RIFF");
        assert_eq!(u32::from_le_bytes(bytes[4..8].try_into().unwrap()), 36 + 8);
        assert_eq!(
            u32::from_le_bytes(bytes[24..28].try_into().unwrap()),
            16_000
        );
        assert_eq!(u32::from_le_bytes(bytes[40..44].try_into().unwrap()), 8);
        assert_eq!(&bytes[44..46], &1i16.to_le_bytes());
        assert_eq!(&bytes[50..52], &i16::MIN.to_le_bytes());
    }
}
