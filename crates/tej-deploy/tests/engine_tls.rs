//! The engine found as the docker CLI finds it, against the private dockerd behind TLS
//! (`--tlsverify`, a test CA): `DOCKER_HOST` with `DOCKER_TLS_VERIFY`/`DOCKER_CERT_PATH`, a
//! docker context directory selected by `DOCKER_CONTEXT`, and a wrong CA refused.

use anyhow::{Context, Result};
use std::collections::HashMap;
use std::path::Path;
use tej_deploy::{
    BollardRuntime, EngineSource, EngineTransport, ImageStore, engine::context_id,
    resolve_engine_with,
};
use tej_testkit::{DockerEngine, TestCa};

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

fn start() -> Result<(TestCa, DockerEngine)> {
    let ca = TestCa::new()?;
    let engine = DockerEngine::start_tls(&ca).context("start dockerd with TLS")?;
    engine.import_busybox_image("tej-tls-probe:1")?;
    Ok((ca, engine))
}

/// The images the engine lists, by tag.
async fn tags(rt: &BollardRuntime) -> Result<Vec<String>> {
    Ok(rt
        .list_images()
        .await?
        .into_iter()
        .flat_map(|i| i.repo_tags)
        .collect())
}

#[tokio::test]
async fn docker_host_with_tls_verify_and_cert_path_reaches_the_engine() -> Result<()> {
    let (_ca, engine) = start()?;
    let host = engine.tls_host().unwrap();
    let certs = engine
        .client_cert_dir()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let resolved = resolve_engine_with(
        None,
        &env_of(&[
            ("DOCKER_HOST", &host),
            ("DOCKER_TLS_VERIFY", "1"),
            ("DOCKER_CERT_PATH", &certs),
        ]),
    )?;
    assert_eq!(resolved.source, EngineSource::DockerHostEnv);
    assert!(
        matches!(&resolved.transport, EngineTransport::Tls { tls, .. } if tls.verify),
        "{resolved:?}"
    );
    let rt = BollardRuntime::connect_to(&resolved).await?;
    assert!(
        tags(&rt).await?.contains(&"tej-tls-probe:1".to_string()),
        "the TLS listener serves the same engine"
    );
    assert!(rt.host().contains("DOCKER_HOST"), "{}", rt.host());

    // The same listener without TLS: the engine does not answer plain HTTP.
    let plain = resolve_engine_with(None, &env_of(&[("DOCKER_HOST", &host)]))?;
    assert!(matches!(plain.transport, EngineTransport::Http { .. }));
    assert!(BollardRuntime::connect_to(&plain).await.is_err());
    Ok(())
}

#[tokio::test]
async fn a_wrong_ca_is_refused_with_a_clear_error() -> Result<()> {
    let (_ca, engine) = start()?;
    let other = TestCa::new()?;
    let dir = tempfile::tempdir()?;
    let client = engine.client_cert_dir().unwrap();
    std::fs::copy(other.ca_file(), dir.path().join("ca.pem"))?;
    for f in ["cert.pem", "key.pem"] {
        std::fs::copy(client.join(f), dir.path().join(f))?;
    }
    let key_pem = std::fs::read_to_string(client.join("key.pem"))?;
    let resolved = resolve_engine_with(
        None,
        &env_of(&[
            ("DOCKER_HOST", &engine.tls_host().unwrap()),
            ("DOCKER_TLS_VERIFY", "1"),
            ("DOCKER_CERT_PATH", dir.path().to_str().unwrap()),
        ]),
    )?;
    let err = BollardRuntime::connect_to(&resolved)
        .await
        .expect_err("a server certificate from another CA must be refused")
        .to_string();
    assert!(err.contains("DOCKER_HOST"), "{err}");
    assert!(
        err.contains("invalid peer certificate"),
        "the reason names the certificate: {err}"
    );
    let key_body: String = key_pem.lines().nth(1).unwrap_or_default().to_string();
    assert!(!err.contains(&key_body), "{err}");
    Ok(())
}

/// A context store under `config_dir` as `docker context create NAME --docker
/// host=HOST,ca=…,cert=…,key=…` lays it out.
fn write_context(config_dir: &Path, name: &str, host: &str, certs: &Path) -> Result<()> {
    let id = context_id(name);
    let meta = config_dir.join("contexts/meta").join(&id);
    std::fs::create_dir_all(&meta)?;
    let json = serde_json::json!({
        "Name": name,
        "Metadata": {"Description": "tej test"},
        "Endpoints": {"docker": {"Host": host, "SkipTLSVerify": false}},
    });
    std::fs::write(meta.join("meta.json"), json.to_string())?;
    let tls = config_dir.join("contexts/tls").join(&id).join("docker");
    std::fs::create_dir_all(&tls)?;
    for f in ["ca.pem", "cert.pem", "key.pem"] {
        std::fs::copy(certs.join(f), tls.join(f))?;
    }
    Ok(())
}

#[tokio::test]
async fn a_docker_context_selected_by_docker_context_reaches_the_engine() -> Result<()> {
    let (_ca, engine) = start()?;
    let store = tempfile::tempdir()?;
    write_context(
        store.path(),
        "tls-test",
        &engine.tls_host().unwrap(),
        engine.client_cert_dir().unwrap(),
    )?;
    // The docker CLI itself reads this layout: `docker context inspect` finds the context.
    let out = std::process::Command::new("docker")
        .args([
            "context",
            "inspect",
            "tls-test",
            "--format",
            "{{.Endpoints.docker.Host}}",
        ])
        .env("DOCKER_CONFIG", store.path())
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_CONTEXT")
        .output()?;
    assert!(
        out.status.success(),
        "docker context inspect: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        engine.tls_host().unwrap()
    );

    let store_s = store.path().to_str().unwrap();
    // The environment's TLS variables do not apply to a context: it carries its own.
    let resolved = resolve_engine_with(
        None,
        &env_of(&[
            ("DOCKER_CONFIG", store_s),
            ("DOCKER_CONTEXT", "tls-test"),
            ("DOCKER_CERT_PATH", "/nonexistent"),
        ]),
    )?;
    let rt = BollardRuntime::connect_to(&resolved).await?;
    assert!(tags(&rt).await?.contains(&"tej-tls-probe:1".to_string()));
    assert!(rt.host().contains("tls-test"), "{}", rt.host());

    // currentContext in config.json selects it just as well.
    std::fs::write(
        store.path().join("config.json"),
        r#"{"auths":{},"currentContext":"tls-test"}"#,
    )?;
    let resolved = resolve_engine_with(None, &env_of(&[("DOCKER_CONFIG", store_s)]))?;
    let rt = BollardRuntime::connect_to(&resolved).await?;
    assert!(rt.host().contains("config.json"), "{}", rt.host());
    rt.list_images().await?;
    Ok(())
}
