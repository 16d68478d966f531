//! `tej.toml` without a `[[database]]` takes libpq's environment the way libpq does:
//! every variable tej maps, values quoted as a connection string needs them.

use tej_core::Config;

#[test]
fn the_libpq_environment_becomes_the_default_database() {
    let env = |k: &str| {
        match k {
            "PGHOST" => Some("127.0.0.1"),
            "PGPORT" => Some("5433"),
            "PGDATABASE" => Some("my app's db"),
            "PGSSLMODE" => Some("require"),
            "PGAPPNAME" => Some("tej"),
            "PGPASSWORD" => Some("not-in-the-url"),
            _ => None,
        }
        .map(str::to_string)
    };
    let c = Config::from_toml_with_env("", "t.toml", &env).unwrap();
    let url = c.databases[0].url.expose().to_string();
    assert_eq!(
        url,
        "host=127.0.0.1 port=5433 dbname='my app\\'s db' sslmode=require application_name=tej"
    );
    assert!(!url.contains("not-in-the-url"));

    // PGUSER alone names no server: no default database.
    let only_user = |k: &str| (k == "PGUSER").then(|| "ops".to_string());
    let c = Config::from_toml_with_env("", "t.toml", &only_user).unwrap();
    assert!(c.databases.is_empty());
}
