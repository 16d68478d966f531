//! A deploy's audit lines, on a private engine, are the Executor's lines: the same fields,
//! the same environment and actor, `applied` with the summary and `failed` with the reason.

mod common;

use common::{Env, loopback};
use std::sync::Arc;
use std::time::Duration;
use tej_core::{
    AuditLog, Calendar, Environment, Executor, Fixed, MockStep, Plan, Procedure, Risk, StepOutput,
    SystemClock,
};
use tej_deploy::{BlueGreenPorts, DeployOptions, Deployer, HealthWait, TcpProxy};

fn step(name: &'static str, result: Result<&'static str, &'static str>) -> MockStep {
    let mut s = MockStep::new();
    s.expect_name().return_const(name.to_string());
    s.expect_risk().return_const(Risk::Mutating);
    s.expect_target().return_const("shop/web".to_string());
    s.expect_plan().returning(move || {
        Ok(Plan {
            step: name.into(),
            risk: Risk::Mutating,
            target: "shop/web".into(),
            actions: vec![format!("do {name}")],
        })
    });
    s.expect_apply().returning(move || match result {
        Ok(m) => Ok(StepOutput::summary(m)),
        Err(e) => Err(e.into()),
    });
    s
}

fn keys(line: &str) -> anyhow::Result<Vec<String>> {
    let v: serde_json::Value = serde_json::from_str(line)?;
    let mut k: Vec<String> = v
        .as_object()
        .ok_or_else(|| anyhow::anyhow!("not an object: {line}"))?
        .keys()
        .cloned()
        .collect();
    k.sort();
    Ok(k)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_audit_lines_have_the_executors_shape() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // The Executor's lines for an applied and a failed mutating step in production.
    let exec_log = AuditLog::new(dir.path().join("executor.jsonl"));
    let mut ex = Executor::new(tej_core::Guard {
        environment: Environment::Production,
        calendar: Calendar::runbook(),
        clock: Arc::new(SystemClock),
        confirmer: Arc::new(Fixed(true)),
        override_window: false,
    });
    ex.audit = Some(exec_log.clone());
    let p = Procedure::new("deploy")
        .step_continue(step("ok", Ok("done")))
        .step(step("bad", Err("it broke")));
    ex.run(&p).await;
    let exec_raw = std::fs::read_to_string(exec_log.path())?;
    let exec_lines: Vec<&str> = exec_raw.lines().collect();
    let exec = exec_log.read_all()?;
    assert_eq!(exec.len(), 2);

    // A deploy of a healthy image, then of one whose health check fails.
    let env = Env::start().await?;
    env.web_image("shop/web:v1", "v1", true)?;
    env.web_image("shop/web:v2", "v2", true)?;
    env.web_image("shop/web:bad", "bad", false)?;
    let (p1, p2) = (common::free_port(), common::free_port());
    env.run_web("shop", 1, "shop/web:v1", p1)?;
    env.wait_healthy("shop-web-1").await?;
    let proxy = Arc::new(TcpProxy::bind("127.0.0.1:0".parse()?, loopback(p1)).await?);
    let audit = AuditLog::new(dir.path().join("audit.jsonl"));
    let mut deployer = Deployer::new(
        env.rt.clone(),
        env.rt.clone(),
        proxy.clone(),
        dir.path().join("locks"),
    );
    deployer.audit = Some(audit.clone());
    deployer.environment = Environment::Production.to_string();
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
        deadline: Duration::from_secs(10),
        interval: Duration::from_millis(100),
    };
    opts.stop_timeout = Duration::from_secs(1);
    opts.drain_timeout = Duration::from_secs(2);
    let good = deployer.deploy(&opts).await;
    assert!(good.succeeded(), "{}", good.summary());
    opts.image = "shop/web:bad".into();
    let bad = deployer.deploy(&opts).await;
    assert!(!bad.succeeded());

    let raw = std::fs::read_to_string(audit.path())?;
    let lines: Vec<&str> = raw.lines().collect();
    let entries = audit.read_all()?;
    assert_eq!(entries.len(), 2, "{raw}");
    for (i, (entry, line)) in entries.iter().zip(&lines).enumerate() {
        assert_eq!(keys(line)?, keys(exec_lines[i])?, "{line}");
        assert_eq!(entry.outcome, exec[i].outcome);
        assert_eq!(entry.environment, exec[i].environment);
        assert_eq!(entry.actor, exec[i].actor);
        assert_eq!(entry.risk, exec[i].risk);
        assert_eq!(
            (entry.procedure.as_str(), entry.step.as_str()),
            ("deploy", "deploy-service")
        );
        assert_eq!(entry.target, "shop/web");
    }
    assert_eq!(entries[0].detail.as_deref(), Some(good.summary().as_str()));
    assert_eq!(entries[1].detail.as_deref(), Some(bad.summary().as_str()));
    Ok(())
}
