//! Plain RTP (RFC 3550, RTP/AVP profile RFC 3551) for SIP phones and trunks.
//!
//! - [`header`]: the 12-byte fixed header, parsed and written without allocation.
//! - [`rtcp`]: receiver statistics and SR/RR + SDES reports.
//! - [`leg`]: [`RtpLeg`], the [`crate::media::Leg`] for RTP/AVP: symmetric RTP
//!   with a hijack guard, SSRC remapping, RTCP on port+1, media timeout.

pub mod header;
pub mod leg;
pub mod rtcp;
#[cfg(test)]
mod tests;

pub use leg::{PROBATION, RtpLeg, RtpLegConfig};
