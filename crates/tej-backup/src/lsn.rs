//! PostgreSQL write-ahead-log positions and file names, shared by base backups,
//! WAL archiving and point-in-time recovery.
//!
//! - [`Lsn`]: a log sequence number as PostgreSQL prints it (`16/B374D848`).
//! - [`WalFileName`]: a WAL segment (`000000010000001600000B37`), a timeline history
//!   file (`00000002.history`), a backup-history file or a partial segment.
//!
//! Segments are 16 MiB unless a cluster was initialised otherwise; every function that
//! maps between the two takes the segment size.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// PostgreSQL's default WAL segment size (16 MiB).
pub const DEFAULT_WAL_SEGMENT_SIZE: u64 = 16 * 1024 * 1024;

/// A log sequence number: a byte position in the write-ahead log.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The segment number (counting from 0 across log files) that holds this position.
    pub fn segment_number(self, segment_size: u64) -> u64 {
        self.0 / segment_size.max(1)
    }

    /// The name of the segment of `timeline` that holds this position.
    pub fn segment_name(self, timeline: u32, segment_size: u64) -> WalFileName {
        WalFileName::Segment {
            timeline,
            segment: self.segment_number(segment_size),
            segment_size,
        }
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl fmt::Debug for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Lsn({self})")
    }
}

/// A string that is not an LSN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a PostgreSQL LSN (expected hex like 16/B374D848)")]
pub struct InvalidLsn(pub String);

impl FromStr for Lsn {
    type Err = InvalidLsn;
    fn from_str(s: &str) -> Result<Lsn, InvalidLsn> {
        let bad = || InvalidLsn(s.to_string());
        let (hi, lo) = s.trim().split_once('/').ok_or_else(bad)?;
        if hi.is_empty() || lo.is_empty() || hi.len() > 8 || lo.len() > 8 {
            return Err(bad());
        }
        let hi = u32::from_str_radix(hi, 16).map_err(|_| bad())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| bad())?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

impl Serialize for Lsn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Lsn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Lsn, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A file PostgreSQL hands to `archive_command` or asks of `restore_command`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WalFileName {
    /// A WAL segment: `TTTTTTTTXXXXXXXXYYYYYYYY`.
    Segment {
        /// Timeline.
        timeline: u32,
        /// Segment number counted across log files (`XXXXXXXX * segments_per_log + YYYYYYYY`).
        segment: u64,
        /// Segment size in bytes, needed to split `segment` into the file name's two halves.
        segment_size: u64,
    },
    /// A partial segment left at a timeline switch: `TTTTTTTTXXXXXXXXYYYYYYYY.partial`.
    Partial {
        /// Timeline.
        timeline: u32,
        /// Segment number.
        segment: u64,
        /// Segment size in bytes.
        segment_size: u64,
    },
    /// A timeline history file: `TTTTTTTT.history`.
    History {
        /// The timeline it describes.
        timeline: u32,
    },
    /// A backup-history file: `TTTTTTTTXXXXXXXXYYYYYYYY.OOOOOOOO.backup`.
    BackupHistory {
        /// Timeline.
        timeline: u32,
        /// Segment number.
        segment: u64,
        /// Offset inside the segment.
        offset: u32,
        /// Segment size in bytes.
        segment_size: u64,
    },
}

/// A string that is not a WAL file name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a WAL segment, history or backup-history file name")]
pub struct InvalidWalFileName(pub String);

fn hex8(s: &str) -> Option<u32> {
    (s.len() == 8 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u32::from_str_radix(s, 16).ok())
        .flatten()
}

fn segments_per_log(segment_size: u64) -> u64 {
    0x1_0000_0000 / segment_size.max(1)
}

impl WalFileName {
    /// Parses a file name (no directory) for a cluster with `segment_size`-byte segments.
    pub fn parse(name: &str, segment_size: u64) -> Result<WalFileName, InvalidWalFileName> {
        let bad = || InvalidWalFileName(name.to_string());
        let seg24 = |s: &str| -> Option<(u32, u64)> {
            // Names come from storage: byte offsets are only sliced on ASCII text.
            if s.len() != 24 || !s.is_ascii() {
                return None;
            }
            let tli = hex8(s.get(0..8)?)?;
            let log = u64::from(hex8(s.get(8..16)?)?);
            let seg = u64::from(hex8(s.get(16..24)?)?);
            let per = segments_per_log(segment_size);
            if seg >= per {
                return None;
            }
            Some((tli, log * per + seg))
        };
        if let Some(t) = name.strip_suffix(".history") {
            let timeline = hex8(t).ok_or_else(bad)?;
            return Ok(WalFileName::History { timeline });
        }
        if let Some(p) = name.strip_suffix(".partial") {
            let (timeline, segment) = seg24(p).ok_or_else(bad)?;
            return Ok(WalFileName::Partial {
                timeline,
                segment,
                segment_size,
            });
        }
        if let Some(b) = name.strip_suffix(".backup") {
            let (seg, off) = b.split_once('.').ok_or_else(bad)?;
            let (timeline, segment) = seg24(seg).ok_or_else(bad)?;
            let offset = hex8(off).ok_or_else(bad)?;
            return Ok(WalFileName::BackupHistory {
                timeline,
                segment,
                offset,
                segment_size,
            });
        }
        let (timeline, segment) = seg24(name).ok_or_else(bad)?;
        Ok(WalFileName::Segment {
            timeline,
            segment,
            segment_size,
        })
    }

    /// The timeline this file belongs to.
    pub fn timeline(&self) -> u32 {
        match *self {
            WalFileName::Segment { timeline, .. }
            | WalFileName::Partial { timeline, .. }
            | WalFileName::History { timeline }
            | WalFileName::BackupHistory { timeline, .. } => timeline,
        }
    }

    /// The segment number, for segments, partial segments and backup-history files.
    pub fn segment(&self) -> Option<u64> {
        match *self {
            WalFileName::Segment { segment, .. }
            | WalFileName::Partial { segment, .. }
            | WalFileName::BackupHistory { segment, .. } => Some(segment),
            WalFileName::History { .. } => None,
        }
    }

    /// The first LSN a segment covers.
    pub fn start_lsn(&self) -> Option<Lsn> {
        match *self {
            WalFileName::Segment {
                segment,
                segment_size,
                ..
            }
            | WalFileName::Partial {
                segment,
                segment_size,
                ..
            }
            | WalFileName::BackupHistory {
                segment,
                segment_size,
                ..
            } => Some(Lsn(segment * segment_size)),
            WalFileName::History { .. } => None,
        }
    }

    /// The next segment on the same timeline (for segments; `None` otherwise).
    pub fn next(&self) -> Option<WalFileName> {
        match *self {
            WalFileName::Segment {
                timeline,
                segment,
                segment_size,
            } => Some(WalFileName::Segment {
                timeline,
                segment: segment + 1,
                segment_size,
            }),
            _ => None,
        }
    }
}

impl fmt::Display for WalFileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let split = |segment: u64, size: u64| {
            let per = segments_per_log(size);
            (segment / per, segment % per)
        };
        match *self {
            WalFileName::Segment {
                timeline,
                segment,
                segment_size,
            } => {
                let (log, seg) = split(segment, segment_size);
                write!(f, "{timeline:08X}{log:08X}{seg:08X}")
            }
            WalFileName::Partial {
                timeline,
                segment,
                segment_size,
            } => {
                let (log, seg) = split(segment, segment_size);
                write!(f, "{timeline:08X}{log:08X}{seg:08X}.partial")
            }
            WalFileName::History { timeline } => write!(f, "{timeline:08X}.history"),
            WalFileName::BackupHistory {
                timeline,
                segment,
                offset,
                segment_size,
            } => {
                let (log, seg) = split(segment, segment_size);
                write!(f, "{timeline:08X}{log:08X}{seg:08X}.{offset:08X}.backup")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = DEFAULT_WAL_SEGMENT_SIZE;

    #[test]
    fn lsn_round_trips_and_orders() {
        let l: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(l.0, 0x16_B374_D848);
        assert_eq!(l.to_string(), "16/B374D848");
        assert_eq!("0/0".parse::<Lsn>().unwrap(), Lsn(0));
        assert!("0/1".parse::<Lsn>().unwrap() < "1/0".parse::<Lsn>().unwrap());
        for bad in ["", "16", "/1", "1/", "G/1", "123456789/0", "1/2/3"] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad}");
        }
        let json = serde_json::to_string(&l).unwrap();
        assert_eq!(json, "\"16/B374D848\"");
        assert_eq!(serde_json::from_str::<Lsn>(&json).unwrap(), l);
    }

    #[test]
    fn segment_names_match_postgres() {
        // pg_walfile_name('16/B374D848') on timeline 1 = 000000010000001600000B37... with 16 MiB
        // segments the low half is 0xB374D848 / 16 MiB = 0xB3.
        let l: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(l.segment_name(1, S).to_string(), "0000000100000016000000B3");
        let n = WalFileName::parse("0000000100000016000000B3", S).unwrap();
        assert_eq!(n.start_lsn().unwrap().to_string(), "16/B3000000");
        assert_eq!(n.next().unwrap().to_string(), "0000000100000016000000B4");
        let last = WalFileName::parse("0000000100000016000000FF", S).unwrap();
        assert_eq!(last.next().unwrap().to_string(), "000000010000001700000000");
    }

    #[test]
    fn other_wal_files_parse() {
        assert_eq!(
            WalFileName::parse("00000002.history", S).unwrap(),
            WalFileName::History { timeline: 2 }
        );
        let p = WalFileName::parse("000000010000000000000003.partial", S).unwrap();
        assert_eq!(p.to_string(), "000000010000000000000003.partial");
        let b = WalFileName::parse("000000010000000000000002.00000028.backup", S).unwrap();
        assert_eq!(b.to_string(), "000000010000000000000002.00000028.backup");
        assert_eq!(b.timeline(), 1);
        for bad in [
            "",
            "RECOVERYHISTORY",
            "00000001000000000000000",
            "0000000100000000000001FF0",
            "000000010000000000000100",
            "zz000001.history",
            "../00000001.history",
        ] {
            assert!(WalFileName::parse(bad, S).is_err(), "{bad}");
        }
    }
}
