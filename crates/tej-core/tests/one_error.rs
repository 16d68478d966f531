//! tej-core has one error type, and its validators answer with it instead of strings.

use tej_core::Error;
use tej_core::calendar::{Calendar, parse_time_of_day};
use tej_core::config::validate_repository;
use tej_core::{Config, SecretRef, Threshold};

/// The old names are the one enum: these compile only because they are the same type.
fn same_type(
    command: tej_core::CommandError,
    config: tej_core::ConfigError,
    calendar: tej_core::calendar::CalendarError,
    secret: tej_core::secret::SecretError,
) -> [Error; 4] {
    [command, config, calendar, secret]
}

#[test]
fn validators_return_the_error_enum_naming_what_is_wrong() {
    let e: Error = validate_repository("s3://A_B").unwrap_err();
    assert!(
        matches!(
            e,
            Error::Invalid {
                what: "repository",
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "invalid S3 bucket name \"A_B\" in \"s3://A_B\""
    );
    let e = validate_repository("/srv/back\0ups").unwrap_err();
    assert!(e.to_string().contains("NUL"), "{e}");

    let e: Error = parse_time_of_day("25:00").unwrap_err();
    assert!(
        matches!(
            e,
            Error::Invalid {
                what: "time of day",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("HH:MM"), "{e}");

    let e: Error = Threshold::above(90.0, 80.0).validate().unwrap_err();
    assert!(
        matches!(
            e,
            Error::Invalid {
                what: "threshold",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("must be beyond"), "{e}");
}

#[test]
fn every_part_of_core_fails_with_the_same_enum() {
    let cfg = Config::from_toml_with_env("[backup]\ncompresion = \"zstd\"\n", "t.toml", &|_| None)
        .unwrap_err();
    assert_eq!(cfg.config_key(), Some("backup.compresion"));
    assert_eq!(cfg.config_file(), Some("t.toml"));
    let zone = Calendar::runbook_in("Mars/Olympus").unwrap_err();
    assert_eq!(zone, Error::UnknownZone("Mars/Olympus".into()));
    let secret = SecretRef::Env {
        env: "TEJ_ONE_ERROR_TEST_UNSET".into(),
    }
    .resolve()
    .unwrap_err();
    assert_eq!(secret, Error::EnvMissing("TEJ_ONE_ERROR_TEST_UNSET".into()));
    let command = Error::NotFound {
        program: "pg_dump".into(),
        package: Some("postgresql-client-15"),
    };
    let all = same_type(command, cfg, zone, secret);
    assert!(all[0].to_string().contains("install the Debian package"));
}

#[test]
fn an_unknown_environment_name_is_the_error_enum_naming_the_choices() {
    use tej_core::Environment;
    assert_eq!("PROD".parse::<Environment>(), Ok(Environment::Production));
    let e: Error = "qa".parse::<Environment>().unwrap_err();
    assert!(
        matches!(
            e,
            Error::Invalid {
                what: "environment",
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "expected production, staging or development, got \"qa\""
    );
    // The same text reaches a configuration error through TEJ_ENVIRONMENT.
    let env = |k: &str| (k == "TEJ_ENVIRONMENT").then(|| "qa".to_string());
    let cfg = Config::from_toml_with_env("", "t.toml", &env).unwrap_err();
    assert_eq!(cfg.config_key(), Some("TEJ_ENVIRONMENT"));
    assert_eq!(cfg.config_message(), Some(e.to_string().as_str()));
}
