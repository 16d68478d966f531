//! [`Backups`]: the front door for programs that embed tej-backup. Opened from `tej.toml`
//! ([`Backups::open`]) or built in code ([`Backups::builder`]), it holds the repositories
//! and the [`BackupSettings`] and runs every operation over them, delegating to the
//! crate's functions ([`create_logical_backup`], [`verify_backup`], [`prune`], ...).
//!
//! Long operations take a [`CancellationToken`]: once it is cancelled, every storage call
//! of the operation fails with [`BackupError::Cancelled`] (through [`CancellableStore`]),
//! the operation ends through its ordinary error path (locks released, an unfinished run
//! never listed) and returns that error. A cancelled verify records nothing beside the
//! backup (a check that did not finish says nothing about it); an operation that had
//! finished its storage work when the token was cancelled returns its result.

use crate::create::CreateReport;
use crate::db::DbTarget;
use crate::error::BackupError;
use crate::files::{
    FileBackupOptions, FileBackupReport, FileRestoreOptions, FileRestoreReport, create_file_backup,
    restore_file_backup,
};
use crate::id::BackupId;
use crate::logical::{LogicalBackupOptions, create_logical_backup};
use crate::manifest::BackupKind;
use crate::physical::{
    PhysicalBackupOptions, PhysicalBackupReport, PhysicalRestoreOptions, PhysicalRestoreReport,
    create_physical_backup, restore_physical_backup,
};
use crate::repo::{BackupSelector, BackupSummary, Repository, Series, list_backups};
use crate::restore::{RestoreOptions, RestoreReport, RestoreStep, restore_backup};
use crate::retention::{PruneOptions, PruneReport, newest_usable, prune};
use crate::settings::BackupSettings;
use crate::storage::CancellableStore;
use crate::verify::{VerifyOptions, VerifyReport, verify_backup};
use crate::wal::WalArchive;
use std::future::Future;
use std::sync::Arc;
use tej_core::{Clock, CommandRunner, Config, SystemClock, TokioCommandRunner};
use tokio_util::sync::CancellationToken;

/// Repositories, settings, the command runner (pg_dump, pg_restore, psql) and the clock:
/// everything a backup operation needs, built once.
///
/// Backups are created in every repository; verify, restore and the WAL archive read the
/// first (the primary); `list` and `prune` cover all of them.
#[derive(Clone)]
pub struct Backups {
    repositories: Vec<Repository>,
    settings: BackupSettings,
    runner: Arc<dyn CommandRunner>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Backups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backups")
            .field("repositories", &self.repositories)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Backups`] in code (see [`Backups::builder`]).
#[derive(Default)]
pub struct BackupsBuilder {
    repositories: Vec<Repository>,
    settings: BackupSettings,
    runner: Option<Arc<dyn CommandRunner>>,
    clock: Option<Arc<dyn Clock>>,
}

impl std::fmt::Debug for BackupsBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupsBuilder")
            .field("repositories", &self.repositories)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl BackupsBuilder {
    /// The settings (default: [`BackupSettings::default`]), replacing earlier ones and the
    /// specs of earlier [`repository_spec`](Self::repository_spec) calls: call it first.
    /// Their `repositories` are opened by [`build`](Self::build), after those given with
    /// [`repository`](Self::repository).
    pub fn settings(mut self, settings: BackupSettings) -> BackupsBuilder {
        self.settings = settings;
        self
    }

    /// Adds an opened repository (any [`crate::ObjectStore`], see [`Repository::from_store`]).
    pub fn repository(mut self, repo: Repository) -> BackupsBuilder {
        self.repositories.push(repo);
        self
    }

    /// Adds a repository to open: a local path or `s3://bucket/prefix`.
    pub fn repository_spec(mut self, spec: impl Into<String>) -> BackupsBuilder {
        self.settings.repositories.push(spec.into());
        self
    }

    /// What starts pg_dump, pg_restore and psql (default: [`TokioCommandRunner`]).
    pub fn runner(mut self, runner: Arc<dyn CommandRunner>) -> BackupsBuilder {
        self.runner = Some(runner);
        self
    }

    /// Where "now" comes from (default: [`SystemClock`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> BackupsBuilder {
        self.clock = Some(clock);
        self
    }

    /// Opens the repositories; fails when one cannot be opened or there is none.
    pub async fn build(self) -> Result<Backups, BackupError> {
        let mut repositories = self.repositories;
        repositories.extend(self.settings.open_repositories().await?);
        if repositories.is_empty() {
            return Err(BackupError::InvalidOptions(
                "no backup repository: set [backup] repositories in tej.toml or add one to the builder"
                    .into(),
            ));
        }
        Ok(Backups {
            repositories,
            settings: self.settings,
            runner: self.runner.unwrap_or_else(|| Arc::new(TokioCommandRunner)),
            clock: self.clock.unwrap_or_else(|| Arc::new(SystemClock)),
        })
    }
}

impl Backups {
    /// The repositories and settings of `config`'s `[backup]`, with the real command
    /// runner and clock.
    pub async fn open(config: &Config) -> Result<Backups, BackupError> {
        Backups::builder()
            .settings(BackupSettings::from_config(config)?)
            .build()
            .await
    }

    /// A builder: repositories, settings, runner and clock set in code.
    pub fn builder() -> BackupsBuilder {
        BackupsBuilder::default()
    }

    /// The settings every operation takes its options from.
    pub fn settings(&self) -> &BackupSettings {
        &self.settings
    }

    /// The repositories, the primary first.
    pub fn repositories(&self) -> &[Repository] {
        &self.repositories
    }

    /// The primary repository (the first): where verify, restore and the WAL archive read.
    pub fn primary(&self) -> &Repository {
        &self.repositories[0]
    }

    fn cancellable(&self, cancel: &CancellationToken) -> Vec<Repository> {
        self.repositories
            .iter()
            .map(|r| Repository {
                store: Arc::new(CancellableStore::new(r.store.clone(), cancel.clone())),
                local_path: r.local_path.clone(),
            })
            .collect()
    }

    fn cancelled(&self) -> BackupError {
        BackupError::Cancelled {
            repo: self
                .repositories
                .iter()
                .map(Repository::name)
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    /// The text form of `selector` that the crate's string-taking functions read back as
    /// the same selector (a target without a kind, or an empty one, has none: refused).
    fn selector_text(selector: &BackupSelector) -> Result<String, BackupError> {
        let text = selector.to_string();
        if BackupSelector::parse(&text).ok().as_ref() != Some(selector) {
            return Err(BackupError::InvalidOptions(format!(
                "backup selector {selector:?}: a target needs a kind (logical, physical or files) and may not be empty"
            )));
        }
        Ok(text)
    }

    /// Runs `op` over the repositories made cancellable by `cancel`; an error after the
    /// cancellation is reported as the cancellation.
    async fn run<T, F, Fut>(&self, cancel: &CancellationToken, op: F) -> Result<T, BackupError>
    where
        F: FnOnce(Vec<Repository>) -> Fut,
        Fut: Future<Output = Result<T, BackupError>>,
    {
        if cancel.is_cancelled() {
            return Err(self.cancelled());
        }
        match op(self.cancellable(cancel)).await {
            Err(_) if cancel.is_cancelled() => Err(self.cancelled()),
            r => r,
        }
    }

    /// A logical backup of `db` into every repository, in the configured format,
    /// compression and encryption.
    pub async fn create_logical(
        &self,
        db: DbTarget,
        cancel: &CancellationToken,
    ) -> Result<CreateReport, BackupError> {
        self.create_logical_with(&self.settings.logical(db), cancel)
            .await
    }

    /// A logical backup with options of the caller's (start from
    /// [`BackupSettings::logical`]).
    pub async fn create_logical_with(
        &self,
        opts: &LogicalBackupOptions,
        cancel: &CancellationToken,
    ) -> Result<CreateReport, BackupError> {
        self.run(cancel, |repos| async move {
            create_logical_backup(self.runner.as_ref(), &repos, opts, self.clock.as_ref()).await
        })
        .await
    }

    /// A physical base backup of the server `db` into every repository.
    pub async fn create_physical(
        &self,
        db: DbTarget,
        cancel: &CancellationToken,
    ) -> Result<PhysicalBackupReport, BackupError> {
        self.create_physical_with(&self.settings.physical(db), cancel)
            .await
    }

    /// A physical base backup with options of the caller's (start from
    /// [`BackupSettings::physical`]).
    pub async fn create_physical_with(
        &self,
        opts: &PhysicalBackupOptions,
        cancel: &CancellationToken,
    ) -> Result<PhysicalBackupReport, BackupError> {
        self.run(cancel, |repos| async move {
            create_physical_backup(&repos, opts, self.clock.as_ref()).await
        })
        .await
    }

    /// A file backup of the configured directories into every repository.
    pub async fn create_files(
        &self,
        cancel: &CancellationToken,
    ) -> Result<FileBackupReport, BackupError> {
        self.create_files_with(&self.settings.files(), cancel).await
    }

    /// A file backup with options of the caller's (start from [`BackupSettings::files`]).
    pub async fn create_files_with(
        &self,
        opts: &FileBackupOptions,
        cancel: &CancellationToken,
    ) -> Result<FileBackupReport, BackupError> {
        self.run(cancel, |repos| async move {
            create_file_backup(&repos, opts, self.clock.as_ref()).await
        })
        .await
    }

    /// Every finished backup in every repository, newest first (by manifest time, then
    /// id); each names its repository.
    pub async fn list(&self) -> Result<Vec<BackupSummary>, BackupError> {
        let mut all = Vec::new();
        for repo in &self.repositories {
            all.extend(list_backups(repo).await?);
        }
        all.sort_by(|a, b| {
            b.finished_at
                .cmp(&a.finished_at)
                .then_with(|| b.id.cmp(&a.id))
                .then_with(|| a.repository.cmp(&b.repository))
        });
        Ok(all)
    }

    /// The newest usable backup `selector` selects in any repository (see
    /// [`newest_usable`]).
    pub async fn newest_usable(
        &self,
        selector: &BackupSelector,
    ) -> Result<Option<BackupSummary>, BackupError> {
        let all = self.list().await?;
        Ok(newest_usable(&all, selector).cloned())
    }

    /// Verifies the selected backup in the primary repository with the configured keys and
    /// records the outcome beside it.
    pub async fn verify(
        &self,
        selector: &BackupSelector,
        cancel: &CancellationToken,
    ) -> Result<VerifyReport, BackupError> {
        self.verify_with(selector, &self.settings.verify(), cancel)
            .await
    }

    /// Verifies with options of the caller's (a restore test; start from
    /// [`BackupSettings::verify`]).
    pub async fn verify_with(
        &self,
        selector: &BackupSelector,
        opts: &VerifyOptions,
        cancel: &CancellationToken,
    ) -> Result<VerifyReport, BackupError> {
        let sel = Backups::selector_text(selector)?;
        self.run(cancel, |repos| async move {
            verify_backup(
                self.runner.as_ref(),
                &repos[0],
                &sel,
                opts,
                self.clock.as_ref(),
            )
            .await
        })
        .await
    }

    /// Restores the selected logical backup of the primary repository into `target`
    /// (which must exist), with the configured keys. Destructive: a program that runs
    /// under a guard uses [`restore_step`](Self::restore_step) instead.
    pub async fn restore(
        &self,
        selector: &BackupSelector,
        target: DbTarget,
        cancel: &CancellationToken,
    ) -> Result<RestoreReport, BackupError> {
        self.restore_with(selector, &self.settings.restore(target), cancel)
            .await
    }

    /// Restores with options of the caller's (start from [`BackupSettings::restore`]).
    pub async fn restore_with(
        &self,
        selector: &BackupSelector,
        opts: &RestoreOptions,
        cancel: &CancellationToken,
    ) -> Result<RestoreReport, BackupError> {
        let sel = Backups::selector_text(selector)?;
        self.run(cancel, |repos| async move {
            restore_backup(self.runner.as_ref(), &repos[0], &sel, opts).await
        })
        .await
    }

    /// Restores the selected physical base backup of the primary repository into the data
    /// directory `target_dir` (empty or absent), with the configured keys; a selector that
    /// picks a logical or file backup is refused. The server is not started: recovery (a
    /// WAL archive to replay, `recovery.signal`) is [`restore_pitr`](crate::restore_pitr)'s.
    pub async fn restore_physical(
        &self,
        selector: &BackupSelector,
        target_dir: &std::path::Path,
        cancel: &CancellationToken,
    ) -> Result<PhysicalRestoreReport, BackupError> {
        self.restore_physical_with(
            selector,
            target_dir,
            &self.settings.physical_restore(),
            cancel,
        )
        .await
    }

    /// Restores a physical base backup with options of the caller's (start from
    /// [`BackupSettings::physical_restore`]).
    pub async fn restore_physical_with(
        &self,
        selector: &BackupSelector,
        target_dir: &std::path::Path,
        opts: &PhysicalRestoreOptions,
        cancel: &CancellationToken,
    ) -> Result<PhysicalRestoreReport, BackupError> {
        let sel = Backups::selector_text(selector)?;
        self.run(cancel, |repos| async move {
            restore_physical_backup(&repos[0], &sel, target_dir, opts).await
        })
        .await
    }

    /// Restores the selected file backup of the primary repository into `target_dir`
    /// (missing or empty), with the configured keys; a selector that picks a database
    /// backup is refused.
    pub async fn restore_files(
        &self,
        selector: &BackupSelector,
        target_dir: &std::path::Path,
        cancel: &CancellationToken,
    ) -> Result<FileRestoreReport, BackupError> {
        self.restore_files_with(selector, target_dir, &self.settings.file_restore(), cancel)
            .await
    }

    /// Restores a file backup with options of the caller's (start from
    /// [`BackupSettings::file_restore`]).
    pub async fn restore_files_with(
        &self,
        selector: &BackupSelector,
        target_dir: &std::path::Path,
        opts: &FileRestoreOptions,
        cancel: &CancellationToken,
    ) -> Result<FileRestoreReport, BackupError> {
        let sel = Backups::selector_text(selector)?;
        self.run(cancel, |repos| async move {
            restore_file_backup(&repos[0], &sel, target_dir, opts).await
        })
        .await
    }

    /// The restore of the selected backup into `target` as a destructive
    /// [`tej_core::Step`], for a [`tej_core::Executor`] (confirmation, the maintenance
    /// window, the audit log).
    pub fn restore_step(
        &self,
        selector: &BackupSelector,
        target: DbTarget,
    ) -> Result<RestoreStep, BackupError> {
        Ok(RestoreStep {
            runner: self.runner.clone(),
            repo: self.primary().clone(),
            selector: Backups::selector_text(selector)?,
            opts: self.settings.restore(target),
        })
    }

    /// Applies the configured retention to every repository; one report per repository,
    /// in order.
    pub async fn prune(&self, cancel: &CancellationToken) -> Result<Vec<PruneReport>, BackupError> {
        self.prune_with(&self.settings.prune(), cancel).await
    }

    /// Prunes with options of the caller's (a dry run; start from [`BackupSettings::prune`]).
    pub async fn prune_with(
        &self,
        opts: &PruneOptions,
        cancel: &CancellationToken,
    ) -> Result<Vec<PruneReport>, BackupError> {
        self.run(cancel, |repos| async move {
            let mut out = Vec::with_capacity(repos.len());
            for repo in &repos {
                out.push(prune(repo, opts, self.clock.as_ref()).await?);
            }
            Ok(out)
        })
        .await
    }

    /// The WAL archive of the primary repository, with the configured keys: `push`
    /// (`archive_command`), `fetch` (`restore_command`), continuity and retention.
    pub fn wal(&self) -> WalArchive {
        self.settings.wal(self.primary().clone())
    }

    /// The WAL archive of [`wal`](Self::wal) whose every storage call stops with
    /// [`BackupError::Cancelled`] once `cancel` is cancelled: a push in flight is
    /// abandoned and leaves no segment listed, as a cancelled create leaves no backup.
    pub fn wal_cancellable(&self, cancel: &CancellationToken) -> WalArchive {
        let mut repos = self.cancellable(cancel);
        self.settings.wal(repos.swap_remove(0))
    }
}

impl BackupSelector {
    /// The newest backup of any series (`latest`).
    pub fn latest() -> BackupSelector {
        BackupSelector {
            id: None,
            kind: None,
            target: None,
        }
    }

    /// Backup `id`, whatever its series.
    pub fn by_id(id: BackupId) -> BackupSelector {
        BackupSelector {
            id: Some(id),
            kind: None,
            target: None,
        }
    }

    /// The newest logical backup of database `database`.
    pub fn latest_logical(database: impl Into<String>) -> BackupSelector {
        BackupSelector::latest_of(&Series::logical(database))
    }

    /// The newest physical base backup of any cluster.
    pub fn latest_physical() -> BackupSelector {
        BackupSelector::latest_kind(BackupKind::Physical)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn selector() -> impl Strategy<Value = BackupSelector> {
        let id = proptest::option::of((0i64..4_000_000_000, "[a-z][a-z0-9_]{0,10}").prop_map(
            |(secs, target)| {
                let at = jiff::Timestamp::from_second(secs).unwrap();
                BackupId::parse(&format!("{}-{target}", at.strftime("%Y%m%dT%H%M%SZ"))).unwrap()
            },
        ));
        let kind = proptest::option::of(prop_oneof![
            Just(BackupKind::Logical),
            Just(BackupKind::Physical),
            Just(BackupKind::Files),
        ]);
        let target = proptest::option::of("[a-z0-9_/,@:.-]{0,20}");
        (id, kind, target).prop_map(|(id, kind, target)| BackupSelector { id, kind, target })
    }

    proptest! {
        #[test]
        fn a_typed_selector_reaches_the_functions_unchanged_or_is_refused(sel in selector()) {
            match Backups::selector_text(&sel) {
                Ok(text) => prop_assert_eq!(BackupSelector::parse(&text).unwrap(), sel),
                Err(e) => {
                    let target = sel.target.as_deref();
                    prop_assert!(target == Some("") || (sel.kind.is_none() && target.is_some()), "{e}");
                }
            }
        }
    }

    #[tokio::test]
    async fn a_selector_without_a_text_form_is_refused_before_any_work() {
        let b = Backups::builder()
            .repository(Repository::from_store(Arc::new(
                crate::storage::MemoryStore::new(),
            )))
            .build()
            .await
            .unwrap();
        let sel = BackupSelector {
            id: None,
            kind: None,
            target: Some("app".into()),
        };
        assert!(b.restore_step(&sel, DbTarget::new("")).is_err());
        let cancel = CancellationToken::new();
        let e = b.verify(&sel, &cancel).await.unwrap_err();
        assert!(e.to_string().contains("needs a kind"), "{e}");
        // A selector with a text form reaches the repository (empty: nothing found).
        let e = b
            .verify(&BackupSelector::latest(), &cancel)
            .await
            .unwrap_err();
        assert!(matches!(e, BackupError::NotFound { .. }), "{e}");
        assert!(
            b.restore_step(&BackupSelector::latest(), DbTarget::new(""))
                .is_ok()
        );
    }

    #[test]
    fn the_constructors_select_what_they_say() {
        assert_eq!(BackupSelector::latest().to_string(), "latest");
        assert_eq!(
            BackupSelector::latest_logical("app").to_string(),
            "latest@logical:app"
        );
        assert_eq!(
            BackupSelector::latest_physical().to_string(),
            "latest@physical"
        );
        let id = BackupId::parse("20250116T020000Z-app").unwrap();
        assert_eq!(
            BackupSelector::by_id(id).to_string(),
            "20250116T020000Z-app"
        );
    }
}
