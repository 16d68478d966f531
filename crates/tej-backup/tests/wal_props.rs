//! Property tests of every parser that reads names and headers from storage: WAL file
//! names, LSNs, WAL page headers, archived-object trailers, history files and the
//! archive's info object. Whatever a repository holds (a stray non-ASCII object name, a
//! truncated object), parsing returns an error instead of panicking.

use proptest::prelude::*;
use tej_backup::open_object;
use tej_backup::{Lsn, WalFileName};
use tej_backup::{SegmentHeader, WalArchiveInfo, parse_history};

/// Segment sizes PostgreSQL allows (1 MiB to 1 GiB, powers of two) and garbage ones.
fn segment_size() -> impl Strategy<Value = u64> {
    prop_oneof![
        (20u32..=30).prop_map(|p| 1u64 << p),
        any::<u64>(),
        Just(0u64),
        Just(1u64),
    ]
}

/// Strings shaped like WAL file names with non-ASCII and non-hex characters mixed in.
fn wal_like_name() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        "[0-9A-F]{1,8}",
        "[é€😀ßあ]{1,3}",
        "[g-zG-Z./_-]{1,3}",
        Just(".partial".to_string()),
        Just(".backup".to_string()),
        Just(".history".to_string()),
    ];
    prop::collection::vec(piece, 0..8).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn wal_file_names_never_panic(name in prop_oneof![any::<String>(), wal_like_name()], size in segment_size()) {
        if let Ok(f) = WalFileName::parse(&name, size) {
            // What parses is ASCII and prints back to the same name.
            prop_assert!(name.is_ascii());
            let _ = f.start_lsn();
            let _ = f.next();
            let _ = f.timeline();
            if size.is_power_of_two() && ((1 << 20)..=(1 << 30)).contains(&size) {
                prop_assert_eq!(f.to_string().to_ascii_uppercase(), name.to_ascii_uppercase());
            }
        }
    }

    #[test]
    fn segment_names_round_trip(tli in 1u32.., seg in any::<u64>(), p in 20u32..=30) {
        let size = 1u64 << p;
        let seg = seg % ((1u64 << 32) * ((1u64 << 32) / size));
        let f = WalFileName::Segment { timeline: tli, segment: seg, segment_size: size };
        prop_assert_eq!(WalFileName::parse(&f.to_string(), size).unwrap(), f);
    }

    #[test]
    fn lsns_never_panic(s in prop_oneof![any::<String>(), "[0-9A-Fé/+-]{0,20}"]) {
        if let Ok(l) = s.parse::<Lsn>() {
            prop_assert_eq!(l.to_string().parse::<Lsn>().unwrap(), l);
        }
    }

    #[test]
    fn wal_page_headers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..96)) {
        let _ = SegmentHeader::parse(&bytes);
    }

    #[test]
    fn wal_object_trailers_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
        len in any::<u32>(),
        magic in any::<bool>(),
    ) {
        let mut b = bytes;
        if magic {
            b.extend_from_slice(&len.to_le_bytes());
            b.extend_from_slice(b"TEJWAL01");
        }
        let _ = open_object(&b);
    }

    #[test]
    fn history_files_never_panic(text in prop_oneof![any::<String>(), "([0-9]{1,3}\t[0-9A-Fé]{1,8}/[0-9A-F]{1,8}\t[a-zé ]{0,10}\n){0,5}"], tli in any::<u32>()) {
        let _ = parse_history(tli, &text);
    }

    #[test]
    fn archive_info_objects_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
        let _ = serde_json::from_slice::<WalArchiveInfo>(&bytes);
    }
}

#[test]
fn a_multibyte_character_across_a_field_boundary_is_an_error() {
    // 24 bytes, with "é" spanning bytes 7..9 (across the timeline/log boundary), and one
    // spanning 15..17 and 23..25 in the other names.
    for name in [
        "0000000é000000000000000",
        "000000010000000é0000000",
        "00000001000000000000000é",
        "0000000é000000000000000.partial",
        "0000000é000000000000000.00000028.backup",
        "00000001000000000000000é.0000002é.backup",
        "0000000é.history",
    ] {
        assert!(
            WalFileName::parse(name, 16 << 20).is_err(),
            "{name} should not parse"
        );
    }
}
