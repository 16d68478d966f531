//! Zero-downtime deploys on a private engine: a client polls the service through the
//! proxy in a loop during each deploy and must see no failed request.

mod common;

use common::{Env, Poller, get, loopback};
use std::sync::Arc;
use std::time::Duration;
use tej_core::{AuditLog, CommandSpec, TokioCommandRunner};
use tej_deploy::{
    BlueGreenPorts, CommandGate, ContainerRuntime, DeployError, DeployKind, DeployOptions,
    DeployStage, Deployer, HealthWait, HttpHealthGate, LogErrorsGate, Project, TcpProxy,
};

fn image_id(env: &Env, reference: &str) -> anyhow::Result<String> {
    Ok(env
        .docker(&["image", "inspect", "--format", "{{.Id}}", reference])?
        .trim()
        .to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_switches_without_failed_requests_rolls_back_bad_images_and_restores_previous()
-> anyhow::Result<()> {
    let env = Env::start().await?;
    let v1 = env.web_image("shop/web:v1", "v1", true)?;
    let v2 = env.web_image("shop/web:v2", "v2", true)?;
    env.web_image("shop/web:bad", "bad", false)?;
    let (p1, p2) = (common::free_port(), common::free_port());
    env.run_web("shop", 1, "shop/web:v1", p1)?;
    env.wait_healthy("shop-web-1").await?;

    let proxy = Arc::new(TcpProxy::bind("127.0.0.1:0".parse()?, loopback(p1)).await?);
    let public = proxy.local_addr();
    assert_eq!(get(public, "/").await?, (200, "v1".to_string()));
    let dir = tempfile::tempdir()?;
    let audit = AuditLog::new(dir.path().join("audit.jsonl"));
    let mut deployer = Deployer::new(
        env.rt.clone(),
        env.rt.clone(),
        proxy.clone(),
        dir.path().join("locks"),
    );
    deployer.audit = Some(audit.clone());
    deployer.environment = "test".into();
    deployer.pre_gates.push(Box::new(CommandGate {
        name: "tests".into(),
        runner: Arc::new(TokioCommandRunner),
        spec: CommandSpec::new("true"),
    }));
    deployer.post_gates.push(Box::new(HttpHealthGate {
        addr: Some(public),
        path: "/health".into(),
        timeout: Duration::from_secs(5),
    }));
    deployer.post_gates.push(Box::new(LogErrorsGate {
        containers: env.rt.clone(),
        window: Duration::from_millis(500),
        pattern: LogErrorsGate::default_pattern(),
    }));
    let mut opts = DeployOptions::new(
        "shop",
        "web",
        "shop/web:v2",
        BlueGreenPorts {
            env: "PORT".into(),
            ports: [p1, p2],
        },
    );
    opts.health = HealthWait {
        deadline: Duration::from_secs(20),
        interval: Duration::from_millis(100),
    };
    opts.stop_timeout = Duration::from_secs(1);
    opts.drain_timeout = Duration::from_secs(5);
    opts.migration = Some(vec![
        "sh".into(),
        "-c".into(),
        "echo migrating to $(busybox cat /www/index.html)".into(),
    ]);
    let rt = &*env.rt;
    let project = Project::new("shop");

    // 1. A healthy image: switched over with no failed request.
    let poller = Poller::start(public);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = deployer.deploy(&opts).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let polled = poller.finish().await?;
    assert!(r.succeeded(), "{}: {:?}", r.summary(), r.events);
    assert!(
        polled.failed.is_empty(),
        "failed requests during deploy: {:?}",
        polled.failed
    );
    assert_eq!(polled.versions, ["v1", "v2"]);
    assert!(polled.ok > 20, "{polled:?}");
    assert_eq!(r.migration_output, ["migrating to v2"]);
    let web = project.containers(rt, Some("web")).await?;
    assert_eq!(web.len(), 1, "{web:?}");
    assert_eq!(web[0].name, "shop-web-2");
    let d = rt.inspect_container(&web[0].id).await?;
    assert_eq!(d.spec.env_var("PORT"), Some(p2.to_string().as_str()));
    assert_eq!(d.spec.env_var("APP_SECRET"), Some("not-for-logs"));
    assert_eq!(d.image_id, v2);
    assert_eq!(image_id(&env, "tej-rollback/shop-web:previous")?, v1);
    assert_eq!(proxy.upstream(), loopback(p2));
    let oneoffs = env.docker(&[
        "ps",
        "-aq",
        "--filter",
        "label=com.docker.compose.oneoff=True",
    ])?;
    assert!(oneoffs.trim().is_empty(), "migration container left behind");

    // 2. An image whose health check fails: removed, the old container keeps answering.
    let mut bad = opts.clone();
    bad.image = "shop/web:bad".into();
    bad.migration = None;
    bad.health.deadline = Duration::from_secs(10);
    let poller = Poller::start(public);
    let r = deployer.deploy(&bad).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let polled = poller.finish().await?;
    assert!(!r.succeeded());
    assert!(
        matches!(
            r.outcome,
            tej_deploy::DeployOutcome::Failed {
                stage: DeployStage::Health,
                ..
            }
        ),
        "{:?}",
        r.outcome
    );
    assert!(
        matches!(r.error, Some(DeployError::Unhealthy { .. })),
        "{:?}",
        r.error
    );
    assert!(
        r.new_container_logs
            .iter()
            .any(|l| l.contains(&format!("starting web on {p1}"))),
        "{:?}",
        r.new_container_logs
    );
    assert!(polled.failed.is_empty(), "{:?}", polled.failed);
    assert_eq!(polled.versions, ["v2"]);
    let web = project.containers(rt, Some("web")).await?;
    assert_eq!(
        web.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["shop-web-2"]
    );
    assert_eq!(get(public, "/").await?, (200, "v2".to_string()));
    assert_eq!(
        image_id(&env, "tej-rollback/shop-web:previous")?,
        v1,
        "a failed deploy keeps the previous image"
    );

    // 3. Rollback: the previous image comes back the same way.
    let poller = Poller::start(public);
    let r = deployer.rollback(&opts).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let polled = poller.finish().await?;
    assert!(r.succeeded(), "{}", r.summary());
    assert_eq!(r.kind, DeployKind::Rollback);
    assert_eq!(r.image, "shop/web:v1");
    assert!(polled.failed.is_empty(), "{:?}", polled.failed);
    assert_eq!(polled.versions, ["v2", "v1"]);
    assert_eq!(image_id(&env, "tej-rollback/shop-web:previous")?, v2);
    assert_eq!(proxy.upstream(), loopback(p1));

    let entries = audit.read_all()?;
    let outcomes: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e.procedure.as_str(), e.outcome.as_str()))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("deploy", "applied"),
            ("deploy", "failed"),
            ("rollback", "applied")
        ]
    );
    assert!(!std::fs::read_to_string(audit.path())?.contains("not-for-logs"));
    Ok(())
}
