//! A labelled Compose-style project on a private engine: discovery, status, logs, exec,
//! restart, force-recreate and the "service down" recovery.

mod common;

use common::{Env, get, loopback};
use std::time::Duration;
use tej_deploy::{
    ContainerRuntime, ContainerState, HealthProbe, HealthStatus, HealthWait, LogQuery, LogStream,
    Project, RecoverOptions, recover_service, wait_healthy,
};

// Pairs 20 ms apart: the order across pairs is certain, within a pair (two pipes) it is not.
const WORKER_CMD: &str = "for i in 1 2 3 4 5; do echo line $i; echo err $i >&2; busybox usleep 20000; done; exec busybox sleep 3600";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn project_is_discovered_with_status_logs_and_exec() -> anyhow::Result<()> {
    let env = Env::start().await?;
    env.web_image("shop/web:v1", "v1", true)?;
    let port = common::free_port();
    env.run_web("shop", 1, "shop/web:v1", port)?;
    env.run_service(
        "shop",
        "worker",
        1,
        common::BASE,
        &[],
        &["sh", "-c", WORKER_CMD],
    )?;
    // A one-off `compose run` container and another project's container are not the project's services.
    env.docker(&[
        "run",
        "-d",
        "--name",
        "shop-worker-run-1",
        "--network",
        "host",
        "--stop-timeout",
        "1",
        "--label",
        "com.docker.compose.project=shop",
        "--label",
        "com.docker.compose.service=worker",
        "--label",
        "com.docker.compose.oneoff=True",
        common::BASE,
        "busybox",
        "sleep",
        "3600",
    ])?;
    env.run_service(
        "blog",
        "web",
        1,
        common::BASE,
        &[],
        &["busybox", "sleep", "3600"],
    )?;
    env.wait_healthy("shop-web-1").await?;

    let rt = &*env.rt;
    // The client negotiated down to the engine's API version (1.41 on Debian's 20.10).
    let server_api = env.docker(&["version", "--format", "{{.Server.APIVersion}}"])?;
    assert_eq!(rt.api_version(), server_api.trim());
    let project = Project::new("shop");
    assert_eq!(project.services(rt).await?, ["web", "worker"]);
    let names: Vec<String> = project
        .containers(rt, None)
        .await?
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["shop-web-1", "shop-worker-1"]);

    let status = project.status(rt, rt, jiff::Timestamp::now()).await?;
    assert_eq!(status.containers.len(), 2);
    let web = &status.containers[0];
    assert_eq!(web.service, "web");
    assert_eq!(web.state, ContainerState::Running);
    assert_eq!(web.health, HealthStatus::Healthy);
    assert_eq!(web.image, "shop/web:v1");
    assert!(
        web.image_created.is_some() && web.image_age_secs.is_some(),
        "{web:?}"
    );
    assert!(web.uptime_secs.is_some());
    assert_eq!(web.network_mode.as_deref(), Some("host"));
    let worker = &status.containers[1];
    assert_eq!(worker.health, HealthStatus::None);
    assert_eq!(
        status.report().severity(),
        tej_core::Severity::Ok,
        "{:?}",
        status.report()
    );

    // Logs: all ten lines, in order, both streams, with timestamps.
    let mut lines = Vec::new();
    for _ in 0..100 {
        lines = project
            .logs(rt, Some("worker"), &LogQuery::default())
            .await?;
        if lines.len() >= 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out: Vec<&str> = lines
        .iter()
        .filter(|l| l.stream == LogStream::Stdout)
        .map(|l| l.text.as_str())
        .collect();
    let err: Vec<&str> = lines
        .iter()
        .filter(|l| l.stream == LogStream::Stderr)
        .map(|l| l.text.as_str())
        .collect();
    assert_eq!(out, ["line 1", "line 2", "line 3", "line 4", "line 5"]);
    assert_eq!(err, ["err 1", "err 2", "err 3", "err 4", "err 5"]);
    assert!(
        lines
            .iter()
            .all(|l| l.at.is_some() && l.container == "shop-worker-1")
    );
    assert!(lines.windows(2).all(|w| w[0].at <= w[1].at));
    // The engine counts the tail across both streams.
    let tail = project.logs(rt, Some("worker"), &LogQuery::tail(2)).await?;
    let mut tail: Vec<&str> = tail.iter().map(|l| l.text.as_str()).collect();
    tail.sort();
    assert_eq!(tail, ["err 5", "line 5"]);
    let third = lines
        .iter()
        .find(|l| l.text == "line 3")
        .and_then(|l| l.at)
        .expect("timestamped");
    let since = project
        .logs(rt, Some("worker"), &LogQuery::since(third))
        .await?;
    let since_out: Vec<&str> = since
        .iter()
        .filter(|l| l.stream == LogStream::Stdout)
        .map(|l| l.text.as_str())
        .collect();
    assert_eq!(since_out, ["line 3", "line 4", "line 5"]);
    assert!(since.iter().all(|l| l.at >= Some(third)));
    let only_out = project
        .logs(
            rt,
            Some("worker"),
            &LogQuery {
                stderr: false,
                ..LogQuery::default()
            },
        )
        .await?;
    assert_eq!(only_out.len(), 5);

    // Exec: exit code and both outputs.
    let o = project
        .exec(
            rt,
            "web",
            &["busybox".into(), "cat".into(), "/www/index.html".into()],
        )
        .await?;
    assert_eq!((o.exit_code, o.stdout.as_str()), (0, "v1\n"));
    let o = project
        .exec(
            rt,
            "web",
            &[
                "sh".into(),
                "-c".into(),
                "echo out; echo oops >&2; exit 3".into(),
            ],
        )
        .await?;
    assert_eq!(
        (o.exit_code, o.stdout.as_str(), o.stderr.as_str()),
        (3, "out\n", "oops\n")
    );
    let e = project
        .exec(rt, "db", &["pg_isready".into()])
        .await
        .unwrap_err();
    assert!(
        matches!(e, tej_deploy::DeployError::NoContainer { .. }),
        "{e}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_recreate_and_recovery_keep_the_service_answering() -> anyhow::Result<()> {
    let env = Env::start().await?;
    env.web_image("shop/web:v1", "v1", true)?;
    let port = common::free_port();
    env.run_web("shop", 1, "shop/web:v1", port)?;
    env.wait_healthy("shop-web-1").await?;
    let rt = &*env.rt;
    let project = Project::new("shop");
    let wait = HealthWait {
        deadline: Duration::from_secs(20),
        interval: Duration::from_millis(100),
    };
    let before = project.running_container(rt, "web").await?;
    let started_before = rt.inspect_container(&before.id).await?.started_at;

    let names = project.restart(rt, "web", Duration::from_secs(1)).await?;
    assert_eq!(names, ["shop-web-1"]);
    wait_healthy(rt, &before.id, &HealthProbe::Docker, None, wait).await?;
    assert_ne!(
        rt.inspect_container(&before.id).await?.started_at,
        started_before
    );
    assert_eq!(get(loopback(port), "/").await?, (200, "v1".to_string()));

    let ids = project
        .force_recreate(rt, "web", Duration::from_secs(1))
        .await?;
    assert_eq!(ids.len(), 1);
    assert_ne!(ids[0], before.id);
    let d = rt.inspect_container(&ids[0]).await?;
    assert_eq!(d.name, "shop-web-1");
    assert_eq!(d.spec.env_var("PORT"), Some(port.to_string().as_str()));
    assert_eq!(d.spec.env_var("APP_SECRET"), Some("not-for-logs"));
    assert_eq!(d.spec.network_mode.as_deref(), Some("host"));
    assert_eq!(d.spec.restart_policy.as_deref(), Some("unless-stopped"));
    assert_eq!(d.spec.stop_timeout, Some(Duration::from_secs(1)));
    assert_eq!(
        d.spec.healthcheck.as_ref().map(|h| h.test.clone()),
        Some(vec![
            "CMD-SHELL".to_string(),
            common::HEALTH_CMD.to_string()
        ])
    );
    wait_healthy(rt, &ids[0], &HealthProbe::Docker, None, wait).await?;
    assert_eq!(get(loopback(port), "/").await?, (200, "v1".to_string()));
    assert_eq!(project.containers(rt, Some("web")).await?.len(), 1);

    // Service down: the health file is gone from the container's filesystem, so a
    // restart does not help and a force-recreate from the image does.
    env.docker(&["exec", "shop-web-1", "busybox", "rm", "/www/health"])?;
    for _ in 0..100 {
        if rt.inspect_container(&ids[0]).await?.health == HealthStatus::Unhealthy {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let opts = RecoverOptions {
        health: wait,
        stop_timeout: Duration::from_secs(1),
        ..RecoverOptions::default()
    };
    let r = recover_service(rt, &project, "web", &opts).await;
    let steps: Vec<(&str, bool)> = r
        .actions
        .iter()
        .map(|a| (a.action.as_str(), a.healthy))
        .collect();
    assert_eq!(
        steps,
        [
            ("check", false),
            ("restart", false),
            ("force-recreate", true)
        ],
        "{r:?}"
    );
    assert!(r.recovered);
    assert_eq!(
        get(loopback(port), "/health").await?,
        (200, "ok".to_string())
    );
    Ok(())
}
