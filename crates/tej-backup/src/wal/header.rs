//! What a WAL file and a data directory say about the cluster they belong to:
//! the long page header at the start of every WAL segment, and `global/pg_control`.

use crate::error::BackupError;
use crate::lsn::Lsn;
use std::path::Path;

/// `XLP_LONG_HEADER`: the page starts with an `XLogLongPageHeaderData`.
const XLP_LONG_HEADER: u16 = 0x0002;
/// Bytes of the long page header that are read.
pub const LONG_HEADER_LEN: usize = 40;

/// The fields of a segment's first page header (`XLogLongPageHeaderData`, little-endian,
/// 64-bit layout: magic u16 @0, info u16 @2, tli u32 @4, pageaddr u64 @8, rem_len u32 @16,
/// padding, sysid u64 @24, seg_size u32 @32, xlog_blcksz u32 @36).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SegmentHeader {
    /// `xlp_magic`: the WAL format version (0xD110 for PostgreSQL 15).
    pub magic: u16,
    /// `xlp_tli`: the timeline of the page (the previous one on a new timeline's first segment).
    pub timeline: u32,
    /// `xlp_pageaddr`: the LSN of the page, the segment's start.
    pub page_address: Lsn,
    /// `xlp_sysid`: the cluster's system identifier.
    pub system_identifier: u64,
    /// `xlp_seg_size`: the WAL segment size, bytes.
    pub segment_size: u32,
    /// `xlp_xlog_blcksz`: the WAL block size, bytes.
    pub block_size: u32,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

impl SegmentHeader {
    /// Parses the long page header at the start of `bytes` (a WAL segment or `.partial`
    /// file); [`BackupError::MalformedWalHeader`] says what is wrong.
    pub fn parse(bytes: &[u8]) -> Result<SegmentHeader, BackupError> {
        SegmentHeader::read(bytes).map_err(|reason| BackupError::MalformedWalHeader { reason })
    }

    /// [`SegmentHeader::parse`], with the reason alone as the error.
    pub(crate) fn read(bytes: &[u8]) -> Result<SegmentHeader, String> {
        if bytes.len() < LONG_HEADER_LEN {
            return Err(format!(
                "{} bytes is too short for a WAL page header",
                bytes.len()
            ));
        }
        let short = || "truncated WAL page header".to_string();
        let magic = u16_at(bytes, 0).ok_or_else(short)?;
        let info = u16_at(bytes, 2).ok_or_else(short)?;
        if !(0xD000..=0xDFFF).contains(&magic) {
            return Err(format!("bad WAL page magic {magic:#06x}"));
        }
        if info & XLP_LONG_HEADER == 0 {
            return Err("the first page has no long header (XLP_LONG_HEADER unset)".into());
        }
        let h = SegmentHeader {
            magic,
            timeline: u32_at(bytes, 4).ok_or_else(short)?,
            page_address: Lsn(u64_at(bytes, 8).ok_or_else(short)?),
            system_identifier: u64_at(bytes, 24).ok_or_else(short)?,
            segment_size: u32_at(bytes, 32).ok_or_else(short)?,
            block_size: u32_at(bytes, 36).ok_or_else(short)?,
        };
        if !h.segment_size.is_power_of_two() || h.segment_size < (1 << 20) {
            return Err(format!("bad WAL segment size {}", h.segment_size));
        }
        if !h.block_size.is_power_of_two() || h.block_size < 1024 {
            return Err(format!("bad WAL block size {}", h.block_size));
        }
        Ok(h)
    }
}

/// Reads the system identifier from a data directory's `global/pg_control`
/// (`ControlFileData.system_identifier`, the first 8 bytes, little-endian), checking the
/// control file version that follows it.
pub fn system_identifier_from_pgdata(pgdata: &Path) -> Result<u64, BackupError> {
    let path = pgdata.join("global").join("pg_control");
    let bytes =
        std::fs::read(&path).map_err(|e| BackupError::io(format!("read {}", path.display()), e))?;
    let bad = |reason: &str| BackupError::InvalidWal {
        file: path.display().to_string(),
        reason: reason.to_string(),
    };
    let sysid = u64_at(&bytes, 0).ok_or_else(|| bad("too short for a control file"))?;
    let version = u32_at(&bytes, 8).ok_or_else(|| bad("too short for a control file"))?;
    if !(900..10_000).contains(&version) {
        return Err(bad(&format!(
            "pg_control_version {version} is not a PostgreSQL control file version"
        )));
    }
    Ok(sysid)
}

#[cfg(test)]
pub(crate) fn fake_segment(sysid: u64, tli: u32, start: Lsn, len: usize, fill: u8) -> Vec<u8> {
    let mut b = vec![fill; len.max(LONG_HEADER_LEN)];
    let seg_size = if len.is_power_of_two() && len >= (1 << 20) {
        len as u32
    } else {
        16 << 20
    };
    b[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
    b[2..4].copy_from_slice(&0x0002u16.to_le_bytes());
    b[4..8].copy_from_slice(&tli.to_le_bytes());
    b[8..16].copy_from_slice(&start.0.to_le_bytes());
    b[16..24].copy_from_slice(&[0; 8]);
    b[24..32].copy_from_slice(&sysid.to_le_bytes());
    b[32..36].copy_from_slice(&seg_size.to_le_bytes());
    b[36..40].copy_from_slice(&8192u32.to_le_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_real_pg15_header() {
        // The first 40 bytes of 000000010000000000000001 of a fresh PostgreSQL 15 initdb
        // (pg_controldata: system identifier 7713479375855153938, 16 MiB segments).
        let hex = "10d10200010000000000000100000000000000000000000012f325e49fc80b6b\
                   0000000100200000";
        let bytes = hex::decode(hex).unwrap();
        let h = SegmentHeader::parse(&bytes).unwrap();
        assert_eq!(h.magic, 0xD110);
        assert_eq!(h.timeline, 1);
        assert_eq!(h.page_address, Lsn(16 << 20));
        assert_eq!(h.system_identifier, 7713479375855153938);
        assert_eq!(h.segment_size, 16 << 20);
        assert_eq!(h.block_size, 8192);
    }

    #[test]
    fn refuses_what_is_not_a_segment() {
        let e = SegmentHeader::parse(b"short").unwrap_err();
        assert!(matches!(e, BackupError::MalformedWalHeader { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "not a WAL segment: 5 bytes is too short for a WAL page header"
        );
        assert!(SegmentHeader::parse(&[0u8; 64]).is_err());
        let mut s = fake_segment(1, 1, Lsn(0), 64, 0);
        s[2] = 0; // no long header
        assert!(SegmentHeader::parse(&s).is_err());
        let mut s = fake_segment(1, 1, Lsn(0), 64, 0);
        s[32..36].copy_from_slice(&12345u32.to_le_bytes());
        assert!(SegmentHeader::parse(&s).is_err());
        assert!(SegmentHeader::parse(&fake_segment(7, 2, Lsn(0), 64, 0)).is_ok());
    }
}
