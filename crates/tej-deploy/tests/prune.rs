//! Image pruning on a private engine removes only what it should.

mod common;

use common::Env;
use std::sync::Arc;
use std::time::Duration;
use tej_core::{Step, SystemClock};
use tej_deploy::{PruneImagesStep, PruneOptions, prune_images};

fn exists(env: &Env, reference: &str) -> bool {
    env.docker(&["image", "inspect", reference]).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_removes_only_unused_and_dangling_images() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let in_use = env.web_image("shop/web:v1", "v1", true)?;
    let previous = env.web_image("shop/web:v0", "v0", true)?;
    env.docker(&["tag", "shop/web:v0", "tej-rollback/shop-web:previous"])?;
    env.docker(&["rmi", "shop/web:v0"])?;
    let unused = env.web_image("shop/web:unused", "unused", true)?;
    let dangling = env.web_image("shop/tmp:x", "first", true)?;
    env.web_image("shop/tmp:x", "second", true)?; // the first build is now dangling
    let listed = env.docker(&["images", "-q", "--no-trunc", "--filter", "dangling=true"])?;
    assert_eq!(listed.trim(), dangling);
    // An exited container still uses its image.
    env.run_service(
        "shop",
        "web",
        1,
        "shop/web:v1",
        &[],
        &["sh", "-c", "exit 0"],
    )?;
    let rt = &*env.rt;
    let now = jiff::Timestamp::now();

    // The runbook's 168 h cutoff: everything here is minutes old, nothing goes.
    let r = prune_images(rt, rt, now, &PruneOptions::default()).await?;
    assert!(r.candidates.is_empty() && r.removed.is_empty(), "{r:?}");
    assert!(r.kept_recent >= 3, "{r:?}");
    assert_eq!((r.kept_in_use, r.kept_protected), (1, 1));

    // Dangling only (`docker image prune -f`), any age.
    let dangling_only = PruneOptions {
        all_unused: false,
        older_than: None,
        ..PruneOptions::default()
    };
    let r = prune_images(rt, rt, now, &dangling_only).await?;
    assert_eq!(r.candidates.len(), 1, "{r:?}");
    assert_eq!(r.removed, [tej_deploy::short_id(&dangling)]);
    assert!(r.reclaimed_bytes > 0 && r.reclaimed_bytes == r.reclaimable_bytes);
    assert!(!exists(&env, &dangling));
    assert!(exists(&env, "shop/web:unused"));

    // Every unused image of any age, but never one in use, the rollback image or a protected one.
    let all = PruneOptions {
        all_unused: true,
        older_than: Some(Duration::ZERO),
        protect: vec![common::BASE.to_string(), "shop/tmp:x".to_string()],
        dry_run: false,
    };
    let step = PruneImagesStep {
        containers: env.rt.clone(),
        images: env.rt.clone(),
        clock: Arc::new(SystemClock),
        options: all.clone(),
    };
    let plan = step.plan().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    assert_eq!(plan.actions.len(), 1, "{plan:?}");
    assert!(plan.actions[0].contains("shop/web:unused"), "{plan:?}");
    assert!(exists(&env, "shop/web:unused"), "planning removes nothing");
    let out = step.apply().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    assert!(
        out.summary.starts_with("removed 1 images"),
        "{}",
        out.summary
    );
    assert!(!exists(&env, &unused));
    assert!(exists(&env, &in_use));
    assert!(exists(&env, &previous));
    assert!(exists(&env, "tej-rollback/shop-web:previous"));
    assert!(exists(&env, common::BASE));
    assert!(exists(&env, "shop/tmp:x"));
    Ok(())
}
