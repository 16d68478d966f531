//! Recreating a Compose service with a new environment on a private engine: the new
//! container gets the new values and keeps everything else; when it is not healthy the
//! old container comes back, running, under its name.

mod common;

use common::Env;
use std::time::Duration;
use tej_core::Secret;
use tej_deploy::{
    ContainerRuntime, ContainerState, EnvOverride, HealthWait, Project, RecreateOptions,
};

/// Healthy unless `JWT_SECRET` is `bad`.
const HEALTH: &str = "test \"$JWT_SECRET\" != bad";

fn set(key: &str, value: &str) -> EnvOverride {
    EnvOverride {
        key: key.into(),
        value: Some(Secret::new(value)),
        alongside: None,
    }
}

fn names(env: &Env) -> Vec<String> {
    let mut v: Vec<String> = env
        .docker(&["ps", "-a", "--format", "{{.Names}}"])
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_applies_the_env_and_brings_the_old_container_back_when_unhealthy()
-> anyhow::Result<()> {
    let env = Env::start().await?;
    env.run_service(
        "shop",
        "backend",
        1,
        common::BASE,
        &[
            "-e",
            "JWT_SECRET=old-value",
            "-e",
            "NODE_ENV=production",
            "-e",
            "STALE_PREVIOUS=x",
            "--health-cmd",
            HEALTH,
            "--health-interval",
            "300ms",
            "--health-retries",
            "1",
        ],
        &["busybox", "sleep", "3600"],
    )?;
    env.wait_healthy("shop-backend-1").await?;
    let rt = &*env.rt;
    let project = Project::new("shop");
    let old = project.running_container(rt, "backend").await?;
    let options = RecreateOptions {
        env: vec![
            set("JWT_SECRET", "new-value"),
            EnvOverride {
                key: "JWT_SECRET_PREVIOUS".into(),
                value: Some(Secret::new("old-value")),
                alongside: Some("JWT_SECRET".into()),
            },
            // Not in the container: not added.
            set("JWT_REFRESH_SECRET", "unused"),
            EnvOverride {
                key: "STALE_PREVIOUS".into(),
                value: None,
                alongside: None,
            },
        ],
        stop_timeout: Duration::from_secs(1),
        health: HealthWait {
            deadline: Duration::from_secs(20),
            interval: Duration::from_millis(100),
        },
    };
    let r = project.recreate_with_env(rt, "backend", &options).await?;
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].name, "shop-backend-1");
    assert_eq!(
        r[0].env_changed,
        ["JWT_SECRET", "JWT_SECRET_PREVIOUS", "STALE_PREVIOUS"]
    );
    let d = rt.inspect_container(&r[0].new_id).await?;
    assert_ne!(d.id, old.id);
    assert_eq!(d.name, "shop-backend-1");
    assert_eq!(d.state, ContainerState::Running);
    assert_eq!(d.spec.env_var("JWT_SECRET"), Some("new-value"));
    assert_eq!(d.spec.env_var("JWT_SECRET_PREVIOUS"), Some("old-value"));
    assert_eq!(d.spec.env_var("NODE_ENV"), Some("production"));
    assert_eq!(d.spec.env_var("JWT_REFRESH_SECRET"), None);
    assert_eq!(d.spec.env_var("STALE_PREVIOUS"), None);
    assert_eq!(
        d.spec
            .labels
            .get(tej_deploy::LABEL_SERVICE)
            .map(String::as_str),
        Some("backend")
    );
    assert_eq!(
        names(&env),
        ["shop-backend-1"],
        "the old container is removed"
    );

    // A new container that never becomes healthy: removed, the old one is back.
    let broken = RecreateOptions {
        env: vec![set("JWT_SECRET", "bad")],
        ..options.clone()
    };
    let e = project
        .recreate_with_env(rt, "backend", &broken)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("the old container is back and running"), "{e}");
    assert!(!e.contains("new-value"), "a value leaked: {e}");
    assert_eq!(
        names(&env),
        ["shop-backend-1"],
        "the new container is removed"
    );
    let back = project.running_container(rt, "backend").await?;
    assert_eq!(back.id, r[0].new_id, "the previous container keeps serving");
    let d = rt.inspect_container(&back.id).await?;
    assert_eq!(d.state, ContainerState::Running);
    assert_eq!(d.spec.env_var("JWT_SECRET"), Some("new-value"));
    env.wait_healthy("shop-backend-1").await?;
    Ok(())
}
