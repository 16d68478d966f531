//! `tej.toml` to rotation options: the one place `[secrets]`, the `[compose]` backend and
//! the first `[[redis]]` become a [`RotateOptions`] and the post-rotation checks an
//! [`HttpProbeConfig`], for the CLI, the runbook and the examples alike.

use crate::error::{Result, SecretsError};
use crate::rotation::{HttpProbeConfig, RotateOptions, RotationMode, SessionInvalidation};
use tej_core::Config;
use tej_core::config::SecretsConfig;

fn not_configured(message: &str) -> SecretsError {
    SecretsError::NotConfigured(message.to_string())
}

fn secrets(cfg: &Config) -> Result<&SecretsConfig> {
    cfg.secrets
        .as_ref()
        .ok_or_else(|| not_configured("no [secrets] in tej.toml: the secrets cannot be rotated"))
}

impl RotateOptions {
    /// The rotation `tej.toml` describes, in `mode`: the `.env` and keys of `[secrets]`
    /// (`env_file`, `rotate`, `env_backups_keep`), the `[compose]` backend service
    /// recreated, the sessions matching the first `[[redis]]`'s `session_pattern` dropped.
    /// The error names the missing section.
    pub fn from_config(cfg: &Config, mode: RotationMode) -> Result<RotateOptions> {
        let sc = secrets(cfg)?;
        let compose = cfg.compose.as_ref().ok_or_else(|| {
            not_configured("rotation recreates the backend: set [compose] project in tej.toml")
        })?;
        let redis = cfg
            .redis
            .first()
            .ok_or_else(|| not_configured("rotation drops sessions: add [[redis]] to tej.toml"))?;
        let mut opts = RotateOptions::new(sc.env_file.clone());
        opts.keys = sc.rotate.clone();
        opts.backups_keep = sc.env_backups_keep;
        opts.mode = mode;
        opts.service = compose.backend_service.clone();
        opts.sessions = SessionInvalidation::Pattern(redis.session_pattern.clone());
        Ok(opts)
    }
}

impl HttpProbeConfig {
    /// The post-rotation checks of `[secrets]`: health and a login of the test account
    /// (`app_url`, `test_email`, `test_password`) at the runbook's endpoints.
    pub fn from_config(cfg: &Config) -> Result<HttpProbeConfig> {
        let sc = secrets(cfg)?;
        let base = sc.app_url.as_deref().ok_or_else(|| {
            not_configured(
                "set [secrets] app_url (the application's base URL) for the post-rotation checks",
            )
        })?;
        let email = sc.test_email.clone().ok_or_else(|| {
            not_configured("set [secrets] test_email for the post-rotation login")
        })?;
        let password = sc
            .test_password
            .as_ref()
            .ok_or_else(|| {
                not_configured(
                    "set [secrets] test_password = { env = \"...\" } for the post-rotation login",
                )
            })?
            .resolve()
            .map_err(|e| {
                SecretsError::NotConfigured(format!("read [secrets] test_password: {e}"))
            })?;
        Ok(HttpProbeConfig::for_base_url(base, email, password))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Config {
        Config::from_toml_with_env(text, "t.toml", &|_| None).unwrap()
    }

    const FULL: &str = r#"
[secrets]
env_file = "/srv/app/.env"
rotate = ["JWT_SECRET", "SESSION_SECRET"]
env_backups_keep = 3
app_url = "https://app.example/"
test_email = "probe@example.com"
test_password = { env = "TEST_PASSWORD" }

[compose]
project = "shop"
backend_service = "api"

[[redis]]
name = "cache"
url = "redis://127.0.0.1:6379/0"
session_pattern = "shop:sess:*"
"#;

    #[test]
    fn options_follow_secrets_compose_and_redis() {
        let o = RotateOptions::from_config(&cfg(FULL), RotationMode::Graceful).unwrap();
        assert_eq!(o.env_file, std::path::PathBuf::from("/srv/app/.env"));
        assert_eq!(o.keys, ["JWT_SECRET", "SESSION_SECRET"]);
        assert_eq!(o.backups_keep, 3);
        assert_eq!(o.mode, RotationMode::Graceful);
        assert_eq!(o.service, "api");
        assert_eq!(
            o.sessions,
            SessionInvalidation::Pattern("shop:sess:*".into())
        );

        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret-pw\n").unwrap();
        let text = FULL.replace(
            "{ env = \"TEST_PASSWORD\" }",
            &format!("{{ file = \"{}\" }}", pw.display()),
        );
        let p = HttpProbeConfig::from_config(&cfg(&text)).unwrap();
        assert_eq!(p.health_url, "https://app.example/health");
        assert_eq!(p.login_url, "https://app.example/api/v1/auth/login");
        assert_eq!(p.email, "probe@example.com");
        assert_eq!(p.password.expose(), "s3cret-pw");
        assert!(!format!("{p:?}").contains("s3cret-pw"), "{p:?}");
    }

    #[test]
    fn each_missing_section_is_named() {
        let e = RotateOptions::from_config(&Config::default(), RotationMode::Standard).unwrap_err();
        assert!(e.to_string().contains("no [secrets]"), "{e}");
        let no_compose = FULL.replace(
            "[compose]\nproject = \"shop\"\nbackend_service = \"api\"\n",
            "",
        );
        let e = RotateOptions::from_config(&cfg(&no_compose), RotationMode::Standard).unwrap_err();
        assert!(e.to_string().contains("[compose] project"), "{e}");
        let no_redis = &FULL[..FULL.find("[[redis]]").unwrap()];
        let e = RotateOptions::from_config(&cfg(no_redis), RotationMode::Standard).unwrap_err();
        assert!(e.to_string().contains("add [[redis]]"), "{e}");
        let no_login = FULL.replace("test_email = \"probe@example.com\"\n", "");
        let e = HttpProbeConfig::from_config(&cfg(&no_login)).unwrap_err();
        assert!(e.to_string().contains("[secrets] test_email"), "{e}");
    }
}
