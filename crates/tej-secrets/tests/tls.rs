//! TLS probing, certificate files and renewal against servers started in the tests.

mod common;

use common::{Ca, TlsServer, leaf, server_config};
use std::time::Duration;
use tej_core::command::ExitInfo;
use tej_core::{CommandOutput, MockCommandRunner, Severity};
use tej_secrets::{
    ReloadMethod, RenewOptions, RenewStep, RenewTarget, TlsProbe, TlsProbeOptions, probe_tls,
    renew_certificates, tls_report,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn finding<'a>(p: &'a TlsProbe, check: &str) -> &'a tej_core::Finding {
    p.findings
        .iter()
        .find(|f| f.check == check)
        .unwrap_or_else(|| panic!("no {check} finding in {:#?}", p.findings))
}

struct Setup {
    dir: tempfile::TempDir,
    ca: Ca,
    ca_file: std::path::PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Tej Test Root CA");
    let ca_file = ca.write(dir.path(), "ca.pem");
    Setup { dir, ca, ca_file }
}

impl Setup {
    fn opts(&self) -> TlsProbeOptions {
        TlsProbeOptions {
            server_name: Some("app.test".into()),
            ca_file: Some(self.ca_file.clone()),
            timeout: Duration::from_secs(5),
            ..TlsProbeOptions::default()
        }
    }
}

async fn serve(l: &common::Leaf, extra: &[&Ca]) -> TlsServer {
    let mut chain = vec![l.der.clone()];
    chain.extend(extra.iter().map(|c| c.der.clone()));
    TlsServer::start(server_config(chain, &l.key)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_certificate_is_ok_with_all_details() {
    let s = setup();
    let l = leaf(&["app.test", "www.app.test"], -10, 80, Some(&s.ca));
    let srv = serve(&l, &[]).await;
    let p = probe_tls(&srv.endpoint(), &s.opts()).await.unwrap();
    assert!(p.handshake, "{:#?}", p.findings);
    assert_eq!(p.severity(), Severity::Ok, "{:#?}", p.findings);
    assert_eq!(p.chain_valid, Some(true));
    assert_eq!(p.hostname_matches, Some(true));
    assert_eq!(p.sans, vec!["app.test", "www.app.test"]);
    assert!(p.issuer.as_deref().unwrap().contains("Tej Test Root CA"));
    let days = p.days_left.unwrap();
    assert!((78.0..=80.0).contains(&days), "{days}");
    assert_eq!(p.chain.len(), 1);
    assert!(p.protocol.as_deref().unwrap().contains("TLS"));
    let e = finding(&p, "tls.expiry");
    assert_eq!(e.metrics[0].name, "tls_cert_days_left");
    assert_eq!(
        (e.metrics[0].warn, e.metrics[0].crit),
        (Some(30.0), Some(7.0))
    );
    // the report renders as JSON for the CLI
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(json["chain_valid"], true);
    let report = tls_report(std::slice::from_ref(&p));
    assert_eq!(report.severity(), Severity::Ok);
    assert_eq!(report.findings.len(), p.findings.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiring_soon_is_critical_but_short_lived_certificates_are_judged_by_lifetime() {
    let s = setup();
    let l = leaf(&["app.test"], -85, 5, Some(&s.ca));
    let srv = serve(&l, &[]).await;
    let p = probe_tls(&srv.endpoint(), &s.opts()).await.unwrap();
    assert_eq!(p.chain_valid, Some(true));
    assert_eq!(finding(&p, "tls.expiry").severity, Severity::Critical);
    assert!(p.days_left.unwrap() <= 5.0 && p.days_left.unwrap() > 3.0);
    // 20 days left: a warning for a 90-day certificate
    let l = leaf(&["app.test"], -70, 20, Some(&s.ca));
    let srv = serve(&l, &[]).await;
    let p = probe_tls(&srv.endpoint(), &s.opts()).await.unwrap();
    assert_eq!(finding(&p, "tls.expiry").severity, Severity::Warning);
    // a 7-day certificate with 4 days left is fine (thresholds 1/3 and 1/10 of its life)
    let l = leaf(&["app.test"], -3, 4, Some(&s.ca));
    let srv = serve(&l, &[]).await;
    let p = probe_tls(&srv.endpoint(), &s.opts()).await.unwrap();
    assert_eq!(p.severity(), Severity::Ok, "{:#?}", p.findings);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_not_yet_valid_still_report_the_chain() {
    let s = setup();
    let l = leaf(&["app.test"], -92, -2, Some(&s.ca));
    let srv = serve(&l, &[]).await;
    let p = probe_tls(&srv.endpoint(), &s.opts()).await.unwrap();
    assert!(p.handshake);
    assert_eq!(p.chain_valid, Some(false));
    assert!(
        p.chain_error.as_deref().unwrap().contains("expired"),
        "{:?}",
        p.chain_error
    );
    assert!(p.days_left.unwrap() < -1.0);
    assert!(finding(&p, "tls.expiry").summary.contains("expired"));
    assert!(p.issuer.is_some() && p.earliest_expiry.is_some());
    assert!(
        finding(&p, "tls.chain")
            .summary
            .starts_with("chain invalid: ")
    );

    let l = leaf(&["app.test"], 3, 93, Some(&s.ca));
    let srv = serve(&l, &[]).await;
    let p = probe_tls(&srv.endpoint(), &s.opts()).await.unwrap();
    assert_eq!(p.chain_valid, Some(false));
    assert!(p.chain_error.as_deref().unwrap().contains("not valid yet"));
    assert_eq!(finding(&p, "tls.validity").severity, Severity::Critical);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_signed_and_wrong_hostname_are_named() {
    let s = setup();
    let l = leaf(&["app.test"], -1, 89, None);
    let srv = serve(&l, &[]).await;
    let p = probe_tls(&srv.endpoint(), &s.opts()).await.unwrap();
    assert_eq!(p.chain_valid, Some(false));
    assert!(
        p.chain_error.as_deref().unwrap().contains("self-signed"),
        "{:?}",
        p.chain_error
    );
    assert!(p.chain[0].self_signed);
    assert_eq!(p.severity(), Severity::Critical);

    let l = leaf(&["other.test"], -1, 89, Some(&s.ca));
    let srv = serve(&l, &[]).await;
    let p = probe_tls(&srv.endpoint(), &s.opts()).await.unwrap();
    assert_eq!(p.hostname_matches, Some(false));
    assert_eq!(finding(&p, "tls.hostname").severity, Severity::Critical);
    assert!(finding(&p, "tls.hostname").summary.contains("other.test"));
    assert!(
        p.chain_error
            .as_deref()
            .unwrap()
            .contains("not valid for app.test")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incomplete_chain_is_told_apart_from_a_complete_one() {
    let s = setup();
    let inter = Ca::signed("Tej Test Intermediate", Some(&s.ca));
    let l = leaf(&["app.test"], -1, 89, Some(&inter));
    let srv = serve(&l, &[]).await;
    let p = probe_tls(&srv.endpoint(), &s.opts()).await.unwrap();
    assert_eq!(p.chain_valid, Some(false));
    assert!(
        p.chain_error
            .as_deref()
            .unwrap()
            .contains("incomplete chain"),
        "{:?}",
        p.chain_error
    );
    let srv = serve(&l, &[&inter]).await;
    let p = probe_tls(&srv.endpoint(), &s.opts()).await.unwrap();
    assert_eq!(p.chain_valid, Some(true), "{:#?}", p.findings);
    assert_eq!(p.chain.len(), 2);
    assert!(p.chain[1].is_ca);
    // the earliest expiry in the chain is the leaf's here
    assert_eq!(p.earliest_expiry, Some(p.chain[0].not_after));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_tls_ports_resets_hangs_and_garbage_are_clear_findings() {
    let s = setup();
    let mut opts = s.opts();
    opts.timeout = Duration::from_millis(1500);
    // plain HTTP
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = l.accept().await {
            let mut b = [0u8; 512];
            let _ = c.read(&mut b).await;
            let _ = c
                .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                .await;
        }
    });
    let p = probe_tls(&format!("127.0.0.1:{http}"), &opts)
        .await
        .unwrap();
    assert!(!p.handshake);
    let f = finding(&p, "tls.handshake");
    assert_eq!(f.severity, Severity::Critical);
    assert!(f.summary.contains("not TLS"), "{}", f.summary);
    // garbage bytes at once
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let garbage = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = l.accept().await {
            let _ = c
                .write_all(&[0xde, 0xad, 0xbe, 0xef, 0x00, 0x01, 0x02, 0x03, 0xff, 0xff])
                .await;
            let mut b = [0u8; 512];
            let _ = c.read(&mut b).await;
        }
    });
    let p = probe_tls(&format!("127.0.0.1:{garbage}"), &opts)
        .await
        .unwrap();
    assert!(
        finding(&p, "tls.handshake").summary.contains("not TLS"),
        "{:#?}",
        p.findings
    );
    // accepts and never answers: a timeout, not a hang
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent = l.local_addr().unwrap().port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((c, _)) = l.accept().await {
            held.push(c);
        }
    });
    let p = probe_tls(&format!("127.0.0.1:{silent}"), &opts)
        .await
        .unwrap();
    let f = finding(&p, "tls.handshake");
    assert!(
        f.summary.contains("timed out") && f.summary.contains("never answered"),
        "{}",
        f.summary
    );
    holder.abort();
    // reset during the handshake
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let reset = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((c, _)) = l.accept().await {
            let mut c = c;
            let mut b = [0u8; 5];
            let _ = c.read(&mut b).await;
            let _ = c.set_zero_linger();
            drop(c);
        }
    });
    let p = probe_tls(&format!("127.0.0.1:{reset}"), &opts)
        .await
        .unwrap();
    let f = finding(&p, "tls.handshake");
    assert!(
        f.summary.contains("reset") || f.summary.contains("closed the connection"),
        "{}",
        f.summary
    );
    // nothing listening
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = l.local_addr().unwrap().port();
    drop(l);
    let p = probe_tls(&format!("127.0.0.1:{closed}"), &opts)
        .await
        .unwrap();
    assert!(finding(&p, "tls.connect").summary.contains("refused"));
    // bad input is an error, not a panic
    assert!(probe_tls("127.0.0.1:notaport", &opts).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_file_that_was_never_reloaded_is_its_own_finding() {
    let s = setup();
    let old = leaf(&["app.test"], -80, 10, Some(&s.ca));
    let new = leaf(&["app.test"], 0, 90, Some(&s.ca));
    let file = s.dir.path().join("fullchain.pem");
    std::fs::write(&file, &new.pem).unwrap();
    let srv = serve(&old, &[]).await;
    let mut opts = s.opts();
    opts.cert_file = Some(file.clone());
    let p = probe_tls(&srv.endpoint(), &opts).await.unwrap();
    let f = finding(&p, "tls.cert_file");
    assert_eq!(f.severity, Severity::Critical);
    assert!(f.summary.contains("reload nginx"), "{}", f.summary);
    assert!(!p.cert_file.as_ref().unwrap().served_matches);
    srv.swap(server_config(vec![new.der.clone()], &new.key));
    let p = probe_tls(&srv.endpoint(), &opts).await.unwrap();
    assert_eq!(finding(&p, "tls.cert_file").severity, Severity::Ok);
    assert_eq!(p.severity(), Severity::Ok, "{:#?}", p.findings);
}

fn ok_output() -> CommandOutput {
    CommandOutput {
        status: ExitInfo {
            code: Some(0),
            signal: None,
        },
        stdout: b"Congratulations, all renewals succeeded".to_vec(),
        stderr: String::new(),
        duration: Duration::ZERO,
    }
}

fn failed_output(stderr: &str) -> CommandOutput {
    CommandOutput {
        status: ExitInfo {
            code: Some(1),
            signal: None,
        },
        stdout: Vec::new(),
        stderr: stderr.into(),
        duration: Duration::ZERO,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_runs_certbot_tests_nginx_reloads_and_confirms_the_new_certificate() {
    let s = setup();
    let old = leaf(&["app.test"], -80, 10, Some(&s.ca));
    let new = leaf(&["app.test"], 0, 90, Some(&s.ca));
    let file = s.dir.path().join("fullchain.pem");
    std::fs::write(&file, &old.pem).unwrap();
    let srv = std::sync::Arc::new(serve(&old, &[]).await);
    let mut seq = mockall::Sequence::new();
    let mut runner = MockCommandRunner::new();
    let (f2, new_pem) = (file.clone(), new.pem.clone());
    runner
        .expect_run()
        .withf(|c| {
            c.program == "certbot"
                && c.args == ["renew", "--non-interactive", "--cert-name", "app.test"]
        })
        .times(1)
        .in_sequence(&mut seq)
        .returning(move |_| {
            std::fs::write(&f2, &new_pem).unwrap();
            Ok(ok_output())
        });
    runner
        .expect_run()
        .withf(|c| c.program == "nginx" && c.args == ["-t"])
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(ok_output()));
    let (srv2, cfg) = (srv.clone(), server_config(vec![new.der.clone()], &new.key));
    runner
        .expect_run()
        .withf(|c| c.program == "systemctl" && c.args == ["reload", "nginx"])
        .times(1)
        .in_sequence(&mut seq)
        .returning(move |_| {
            srv2.swap(cfg.clone());
            Ok(ok_output())
        });
    let mut probe = s.opts();
    probe.cert_file = Some(file.clone());
    let opts = RenewOptions {
        cert_names: vec!["app.test".into()],
        targets: vec![RenewTarget {
            endpoint: srv.endpoint(),
            probe,
        }],
        ..RenewOptions::default()
    };
    let r = renew_certificates(&runner, &opts).await.unwrap();
    assert!(r.config_test_ok && r.reloaded);
    assert_eq!(r.severity(), Severity::Ok, "{:#?}", r.findings);
    assert!(r.probes[0].cert_file.as_ref().unwrap().served_matches);
    assert!(r.probes[0].days_left.unwrap() > 85.0);
}

#[tokio::test]
async fn renewal_stops_before_reloading_a_broken_config_and_dry_runs_never_reload() {
    let mut runner = MockCommandRunner::new();
    runner
        .expect_run()
        .withf(|c| c.program == "certbot")
        .returning(|_| Ok(ok_output()));
    runner
        .expect_run()
        .withf(|c| c.program == "nginx" && c.args == ["-t"])
        .returning(|_| Ok(failed_output("nginx: [emerg] unknown directive \"sslx\"")));
    runner
        .expect_run()
        .withf(|c| c.program == "systemctl")
        .never();
    let r = renew_certificates(&runner, &RenewOptions::default())
        .await
        .unwrap();
    assert!(!r.config_test_ok && !r.reloaded);
    assert_eq!(r.severity(), Severity::Critical);
    assert!(
        r.findings
            .iter()
            .any(|f| f.summary.contains("unknown directive"))
    );

    let mut runner = MockCommandRunner::new();
    runner
        .expect_run()
        .withf(|c| c.program == "certbot" && c.args.iter().any(|a| a == "--dry-run"))
        .times(1)
        .returning(|_| Ok(ok_output()));
    runner
        .expect_run()
        .withf(|c| c.program == "nginx" && c.args == ["-t"])
        .times(1)
        .returning(|_| Ok(ok_output()));
    let r = renew_certificates(
        &runner,
        &RenewOptions {
            dry_run: true,
            reload: ReloadMethod::NginxSignal,
            ..RenewOptions::default()
        },
    )
    .await
    .unwrap();
    assert!(r.config_test_ok && !r.reloaded);
    // certbot failing is an error naming the command
    let mut runner = MockCommandRunner::new();
    runner
        .expect_run()
        .returning(|_| Ok(failed_output("Challenge failed for domain app.test")));
    let e = renew_certificates(&runner, &RenewOptions::default())
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("certbot renew") && e.to_string().contains("Challenge failed"),
        "{e}"
    );
}

#[tokio::test]
async fn renewal_as_a_step_plans_in_dry_runs_and_is_audited_when_applied() {
    use std::sync::Arc;
    use tej_core::{
        AuditLog, Calendar, Environment, Executor, FakeClock, Fixed, Guard, Outcome, Procedure,
    };
    let dir = tempfile::tempdir().unwrap();
    let guard = Guard {
        environment: Environment::Production,
        calendar: Calendar::runbook(),
        clock: Arc::new(FakeClock::new("2025-01-16T06:30:00Z".parse().unwrap())),
        confirmer: Arc::new(Fixed(false)),
        override_window: false,
    };
    let mut runner = MockCommandRunner::new();
    runner.expect_run().never();
    let step = RenewStep::new(Arc::new(runner), RenewOptions::default());
    let mut ex = Executor::new(guard.clone());
    ex.dry_run = true;
    let r = ex.run(&Procedure::new("tls-renew").step(step)).await;
    assert_eq!(r.steps[0].outcome, Outcome::Planned);
    assert_eq!(
        r.steps[0].actions,
        [
            "certbot renew --non-interactive",
            "nginx -t",
            "systemctl reload nginx"
        ]
    );
    let mut runner = MockCommandRunner::new();
    runner.expect_run().times(3).returning(|_| Ok(ok_output()));
    let step = RenewStep::new(Arc::new(runner), RenewOptions::default());
    let mut ex = Executor::new(guard);
    let log = AuditLog::new(dir.path().join("audit.jsonl"));
    ex.audit = Some(log.clone());
    let r = ex.run(&Procedure::new("tls-renew").step(step)).await;
    assert!(r.succeeded(), "{r:?}");
    let entries = log.read_all().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].step, "tls-renew");
    assert_eq!(entries[0].outcome, "applied");
    assert!(
        entries[0]
            .detail
            .as_deref()
            .unwrap()
            .contains("nginx reloaded")
    );
}
