//! Image maintenance: prune unused and dangling images (the runbook's
//! `docker image prune -af --filter until=168h`), never one a container or the rollback
//! path uses, and report the reclaimable space.

use crate::error::DeployError;
use crate::model::{ImageInfo, short_id};
use crate::runtime::{ContainerRuntime, ImageStore};
use async_trait::async_trait;
use jiff::Timestamp;
use serde::Serialize;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tej_core::{Clock, Plan, Risk, Step, StepError, StepOutput};

/// Repository prefix of the tags that keep previous images for `tej rollback`.
pub const ROLLBACK_REPO_PREFIX: &str = "tej-rollback/";
/// The tag of the previous image of a service.
pub const ROLLBACK_TAG: &str = "previous";

/// The repository (`tej-rollback/shop-backend`) holding a service's previous image.
pub fn rollback_repo(project: &str, service: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                let c = c.to_ascii_lowercase();
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    };
    format!(
        "{ROLLBACK_REPO_PREFIX}{}-{}",
        clean(project),
        clean(service)
    )
}

/// What to prune.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneOptions {
    /// Unused tagged images too (`-a`); otherwise only dangling ones.
    pub all_unused: bool,
    /// Only images built longer ago than this (`until=168h`); none: any age.
    pub older_than: Option<Duration>,
    /// References (`repo:tag` or ids) never to remove, beyond images in use and rollback tags.
    pub protect: Vec<String>,
    /// Only report what would be removed.
    pub dry_run: bool,
}

impl Default for PruneOptions {
    /// The runbook's weekly prune: unused images older than 7 days (168 h).
    fn default() -> Self {
        PruneOptions {
            all_unused: true,
            older_than: Some(Duration::from_secs(168 * 3600)),
            protect: Vec::new(),
            dry_run: false,
        }
    }
}

/// One image the prune removes (or would remove).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PruneCandidate {
    /// Short id.
    pub id: String,
    /// Its tags (empty: dangling).
    pub tags: Vec<String>,
    /// Size in bytes.
    pub size: u64,
    /// When it was built.
    pub created: Option<Timestamp>,
}

/// What a prune did.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct PruneReport {
    /// Only planned.
    pub dry_run: bool,
    /// Images selected for removal.
    pub candidates: Vec<PruneCandidate>,
    /// Short ids actually removed.
    pub removed: Vec<String>,
    /// Short ids whose removal the engine refused, with its reason.
    pub failed: Vec<(String, String)>,
    /// Bytes the candidates take (shared layers counted once per image, so an upper bound).
    pub reclaimable_bytes: u64,
    /// Bytes of the removed images.
    pub reclaimed_bytes: u64,
    /// Images kept because a container (running or not) uses them.
    pub kept_in_use: usize,
    /// Images kept because they hold a rollback tag or are protected.
    pub kept_protected: usize,
    /// Images kept because they are newer than the cutoff.
    pub kept_recent: usize,
}

/// Selects and (unless a dry run) removes images as `opts` says.
pub async fn prune_images(
    rt: &dyn ContainerRuntime,
    images: &dyn ImageStore,
    now: Timestamp,
    opts: &PruneOptions,
) -> Result<PruneReport, DeployError> {
    let in_use: HashSet<String> = rt
        .list_containers(&[])
        .await?
        .into_iter()
        .map(|c| c.image_id)
        .collect();
    let mut protected_ids: HashSet<String> = HashSet::new();
    for p in &opts.protect {
        match images.inspect_image(p).await {
            Ok(i) => {
                protected_ids.insert(i.id);
            }
            Err(DeployError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let cutoff = opts
        .older_than
        .and_then(|d| jiff::SignedDuration::try_from(d).ok())
        .and_then(|d| now.checked_sub(d).ok());
    let mut report = PruneReport {
        dry_run: opts.dry_run,
        ..PruneReport::default()
    };
    let mut chosen: Vec<ImageInfo> = Vec::new();
    for img in images.list_images().await? {
        if in_use.contains(&img.id) {
            report.kept_in_use += 1;
            continue;
        }
        if protected_ids.contains(&img.id)
            || img
                .repo_tags
                .iter()
                .any(|t| t.starts_with(ROLLBACK_REPO_PREFIX))
        {
            report.kept_protected += 1;
            continue;
        }
        if !img.is_dangling() && !opts.all_unused {
            continue;
        }
        if let Some(cutoff) = cutoff {
            // An image without a build time is treated as recent: never guess towards removal.
            if img.created.is_none_or(|c| c > cutoff) {
                report.kept_recent += 1;
                continue;
            }
        }
        chosen.push(img);
    }
    for img in &chosen {
        report.reclaimable_bytes += img.size;
        report.candidates.push(PruneCandidate {
            id: short_id(&img.id).to_string(),
            tags: img.repo_tags.clone(),
            size: img.size,
            created: img.created,
        });
    }
    if opts.dry_run {
        return Ok(report);
    }
    for img in chosen {
        let result = if img.is_dangling() {
            images.remove_image(&img.id).await
        } else {
            // Untagging the last tag deletes the image; removing by id with several tags
            // would need force, which tej never uses.
            let mut r = Ok(());
            for t in &img.repo_tags {
                r = images.remove_image(t).await;
                if r.is_err() {
                    break;
                }
            }
            r
        };
        match result {
            Ok(()) => {
                report.removed.push(short_id(&img.id).to_string());
                report.reclaimed_bytes += img.size;
            }
            Err(e @ (DeployError::Conflict { .. } | DeployError::NotFound { .. })) => {
                report
                    .failed
                    .push((short_id(&img.id).to_string(), e.to_string()));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(report)
}

/// [`prune_images`] as a procedure step, destructive (images are removed for good, so it
/// needs confirmation and, in production, the window), though only unused images go and the
/// rollback path's images are kept.
pub struct PruneImagesStep {
    /// Containers (to know which images are in use).
    pub containers: Arc<dyn ContainerRuntime>,
    /// Images.
    pub images: Arc<dyn ImageStore>,
    /// Where "now" comes from.
    pub clock: Arc<dyn Clock>,
    /// What to prune.
    pub options: PruneOptions,
}

#[async_trait]
impl Step for PruneImagesStep {
    fn name(&self) -> String {
        "docker-image-prune".into()
    }
    fn risk(&self) -> Risk {
        Risk::Destructive
    }
    fn target(&self) -> String {
        "docker images".into()
    }
    async fn plan(&self) -> Result<Plan, StepError> {
        let opts = PruneOptions {
            dry_run: true,
            ..self.options.clone()
        };
        let r = prune_images(&*self.containers, &*self.images, self.clock.now(), &opts).await?;
        let mut actions: Vec<String> = r
            .candidates
            .iter()
            .map(|c| {
                format!(
                    "remove image {} {} ({} bytes)",
                    c.id,
                    if c.tags.is_empty() {
                        "<dangling>".to_string()
                    } else {
                        c.tags.join(",")
                    },
                    c.size
                )
            })
            .collect();
        if actions.is_empty() {
            actions.push("nothing to prune".into());
        }
        Ok(Plan::of(self, actions))
    }
    async fn apply(&self) -> Result<StepOutput, StepError> {
        let r = prune_images(
            &*self.containers,
            &*self.images,
            self.clock.now(),
            &self.options,
        )
        .await?;
        Ok(StepOutput {
            summary: format!(
                "removed {} images, reclaimed {} bytes ({} refused)",
                r.removed.len(),
                r.reclaimed_bytes,
                r.failed.len()
            ),
            findings: Vec::new(),
            data: serde_json::to_value(&r).unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ContainerListing, ContainerState};
    use crate::runtime::{MockContainerRuntime, MockImageStore};
    use std::sync::Mutex;

    const NOW: &str = "2025-01-20T00:00:00Z";

    fn img(id: &str, tags: &[&str], days_old: i64, size: u64) -> ImageInfo {
        let now: Timestamp = NOW.parse().unwrap();
        ImageInfo {
            id: format!("sha256:{id}"),
            repo_tags: tags.iter().map(|t| t.to_string()).collect(),
            created: Some(now - jiff::SignedDuration::from_hours(24 * days_old)),
            size,
            defaults: Default::default(),
        }
    }

    fn setup() -> (
        MockContainerRuntime,
        MockImageStore,
        Arc<Mutex<Vec<String>>>,
    ) {
        let mut rt = MockContainerRuntime::new();
        rt.expect_list_containers().returning(|_| {
            Ok(vec![ContainerListing {
                id: "c1".into(),
                name: "shop-backend-1".into(),
                image: "shop/backend:v2".into(),
                image_id: "sha256:inuse".into(),
                labels: Default::default(),
                state: ContainerState::Exited,
            }])
        });
        let mut im = MockImageStore::new();
        im.expect_list_images().returning(|| {
            Ok(vec![
                img("inuse", &["shop/backend:v2"], 30, 100),
                img("rollback", &["tej-rollback/shop-backend:previous"], 30, 200),
                img(
                    "oldunused",
                    &["shop/backend:v0", "shop/backend:old"],
                    10,
                    300,
                ),
                img("newunused", &["shop/backend:v3rc"], 1, 400),
                img("olddangling", &[], 9, 500),
                img("newdangling", &[], 0, 600),
                img("protected", &["keep/me:1"], 100, 700),
            ])
        });
        im.expect_inspect_image()
            .withf(|r| r == "keep/me:1")
            .returning(|_| Ok(img("protected", &["keep/me:1"], 100, 700)));
        let removed = Arc::new(Mutex::new(Vec::new()));
        let r2 = removed.clone();
        im.expect_remove_image().returning(move |r| {
            r2.lock().unwrap().push(r.to_string());
            Ok(())
        });
        (rt, im, removed)
    }

    #[tokio::test]
    async fn prune_unused_older_than_cutoff_keeps_in_use_rollback_and_recent() {
        let (rt, im, removed) = setup();
        let opts = PruneOptions {
            protect: vec!["keep/me:1".into()],
            ..PruneOptions::default()
        };
        let r = prune_images(&rt, &im, NOW.parse().unwrap(), &opts)
            .await
            .unwrap();
        assert_eq!(
            *removed.lock().unwrap(),
            ["shop/backend:v0", "shop/backend:old", "sha256:olddangling"]
        );
        assert_eq!(r.removed, ["oldunused", "olddangling"]);
        assert_eq!(r.reclaimable_bytes, 800);
        assert_eq!(r.reclaimed_bytes, 800);
        assert_eq!((r.kept_in_use, r.kept_protected, r.kept_recent), (1, 2, 2));
    }

    #[tokio::test]
    async fn dangling_only_any_age_and_dry_run_removes_nothing() {
        let (rt, im, removed) = setup();
        let opts = PruneOptions {
            all_unused: false,
            older_than: None,
            protect: vec![],
            dry_run: true,
        };
        let r = prune_images(&rt, &im, NOW.parse().unwrap(), &opts)
            .await
            .unwrap();
        let ids: Vec<_> = r.candidates.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["olddangling", "newdangling"]);
        assert_eq!(r.reclaimable_bytes, 1100);
        assert!(r.removed.is_empty());
        assert!(removed.lock().unwrap().is_empty());
    }

    #[test]
    fn rollback_repo_names_are_valid_references() {
        assert_eq!(
            rollback_repo("Shop", "back end"),
            "tej-rollback/shop-back-end"
        );
    }
}
