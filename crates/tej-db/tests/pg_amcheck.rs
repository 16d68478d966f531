//! Corruption in a deliberately damaged index is found by amcheck.

use std::io::{Seek, SeekFrom, Write};
use tej_core::Severity;
use tej_db::pg::{AmcheckOptions, DbError, PgClient, PgConnectOptions, amcheck};
use tej_testkit::{PgCluster, PgClusterOptions};

#[tokio::test]
async fn corruption_in_a_damaged_index_is_detected() {
    let mut pg = PgCluster::start_with(PgClusterOptions {
        data_checksums: false,
        ..Default::default()
    })
    .unwrap();
    pg.create_database("app").unwrap();
    pg.psql(
        "app",
        "CREATE TABLE items (id int PRIMARY KEY, name text);
         CREATE INDEX items_name_idx ON items (name);
         INSERT INTO items SELECT g, 'item-' || lpad(g::text, 6, '0') FROM generate_series(1, 20000) g;
         CHECKPOINT;",
    )
    .unwrap();
    let c = PgClient::new(&PgConnectOptions::new(pg.url("app"))).unwrap();
    let e = amcheck(&c, &AmcheckOptions::default()).await.unwrap_err();
    assert!(
        matches!(&e, DbError::ExtensionMissing { extension, .. } if extension == "amcheck"),
        "{e:?}"
    );
    let clean = amcheck(
        &c,
        &AmcheckOptions {
            create_extension: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(clean.damaged.is_empty(), "{:?}", clean.damaged);
    assert!(clean.tables_checked > 1 && clean.indexes_checked > 2);
    assert_eq!(clean.findings[0].severity, Severity::Ok);

    let rel = pg
        .psql("app", "SELECT pg_relation_filepath('items_name_idx')")
        .unwrap();
    let path = pg.data_dir().join(rel);
    drop(c);
    pg.stop().unwrap();
    {
        // Block 1 is a leaf page; overwrite part of its tuple area with garbage keys.
        let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.seek(SeekFrom::Start(8192 + 4096)).unwrap();
        f.write_all(&[0x7f; 512]).unwrap();
        f.sync_all().unwrap();
    }
    pg.start_again().unwrap();

    let c = PgClient::new(&PgConnectOptions::new(pg.url("app"))).unwrap();
    let r = amcheck(&c, &AmcheckOptions::default()).await.unwrap();
    let names: Vec<&str> = r.damaged.iter().map(|d| d.relation.as_str()).collect();
    assert_eq!(names, vec!["items_name_idx"], "{:?}", r.damaged);
    assert_eq!(r.damaged[0].kind, "index");
    assert!(!r.damaged[0].problems[0].is_empty());
    let f = &r.findings[0];
    assert_eq!(f.severity, Severity::Critical);
    assert!(f.summary.contains("items_name_idx"));
    assert!(f.detail.as_deref().unwrap().contains("REINDEX"));
}
