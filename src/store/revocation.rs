//! Revoked tokens (docs/operations.md): by `jti` until the token's `exp`, or by subject for every
//! token issued (`iat`) at or before the revocation. The [`RevocationStore`] trait is what the
//! gateway checks against (the handshake, `auth.refresh`, the sessions after each read) and
//! what announces each new revocation on its change feed; the sessions follow that feed (one
//! close path: a session that learns its token is revoked closes itself with 4003).
//! [`LocalRevocations`] is the store of a single node.
//!
//! Persistence: with a `state_dir`, every revocation is appended to `revocations.jsonl` as one
//! JSON line and fsynced before it is acknowledged, so a restart does not forget it. The file
//! is rewritten without the expired entries at start and whenever expired entries make up
//! more than half of it (write to a temporary file, fsync, rename).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use futures_util::future::{self, BoxFuture};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::auth::{unix_now, Claims};

/// File name of the revocation log inside `state_dir`.
pub const FILE_NAME: &str = "revocations.jsonl";

/// How long an entry is kept when nothing says when the revoked tokens expire.
pub const DEFAULT_KEEP_SECONDS: u64 = 24 * 3600;

/// Revocations a slow follower may fall behind by before it must re-check every session.
const FEED_CAPACITY: usize = 1024;

/// Revoked tokens and subjects, wherever they are kept.
pub trait RevocationStore: Send + Sync {
    /// Record `r`: persisted first where the store persists, then in force and announced on
    /// the feed.
    ///
    /// # Errors
    /// [`AddError`]: the revocation is then in force on this node (its live sessions it covers
    /// close), but the caller must report what it lacks.
    fn add(&self, r: Revocation) -> BoxFuture<'_, Result<(), AddError>>;
    /// True when `claims` are revoked at `now` (unix seconds). A local lookup, never a network
    /// call: it runs on the data path.
    fn check(&self, claims: &Claims, now: u64) -> bool;
    /// Changes with every revocation put in force (0 while there is none): sessions compare it
    /// after each read.
    fn generation(&self) -> u64;
    /// The change feed: every revocation put in force from now on, in order.
    fn subscribe(&self) -> broadcast::Receiver<Revocation>;
    /// Forget expired entries (and rewrite a persistent log that is mostly expired).
    ///
    /// # Errors
    /// The rewrite failed (the old log stays in place and in use).
    fn compact(&self, now: u64) -> std::io::Result<()>;
}

/// A revocation in force on this node that could not be made everything it should be.
#[derive(Debug, thiserror::Error)]
pub enum AddError {
    /// Writing `server.state_dir` failed: it is forgotten on restart.
    #[error("revocation in force but not persisted (lost on restart): {0}")]
    NotPersisted(#[from] std::io::Error),
    /// The fleet store could not be reached: in force on this node only (retried in the
    /// background, and by the caller).
    #[error("revocation in force on this node only: the fleet store is unreachable ({0})")]
    NotShared(String),
}

/// One revocation, as stored (one JSON line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Revocation {
    /// The token with this `jti` is refused until `until` (its `exp`).
    Token {
        /// The token id.
        jti: String,
        /// Unix seconds after which the entry is dropped.
        until: u64,
    },
    /// Tokens of `sub` issued at or before `before` are refused until `until`.
    Subject {
        /// The subject.
        sub: String,
        /// Unix seconds of the revocation.
        before: u64,
        /// Unix seconds after which the entry is dropped.
        until: u64,
    },
}

/// True when a token issued at `iat` falls under a subject revocation made at `before` (whole
/// seconds, the same second counts; a token without `iat` cannot prove it is newer).
fn issued_by(iat: Option<u64>, before: u64) -> bool {
    iat.is_none_or(|iat| iat <= before)
}

impl Revocation {
    /// True when this entry covers a token of `subject` with `jti` and `iat`.
    pub fn covers(&self, subject: &str, jti: Option<&str>, iat: Option<u64>) -> bool {
        match self {
            Self::Token { jti: revoked, .. } => jti == Some(revoked.as_str()),
            Self::Subject { sub, before, .. } => subject == sub && issued_by(iat, *before),
        }
    }

    /// Unix seconds after which the entry is dropped.
    pub fn until(&self) -> u64 {
        match self {
            Self::Token { until, .. } | Self::Subject { until, .. } => *until,
        }
    }
}

/// The live set.
#[derive(Debug, Default)]
struct Set {
    tokens: HashMap<String, u64>,
    /// Subject → (revoked at, keep until).
    subjects: HashMap<String, (u64, u64)>,
    /// Lines in the file (expired ones included) since the last rewrite.
    lines: usize,
}

impl Set {
    /// Put `r` in force; false when it changed nothing.
    fn insert(&mut self, r: &Revocation) -> bool {
        match r {
            Revocation::Token { jti, until } => match self.tokens.get_mut(jti) {
                Some(e) if *e >= *until => false,
                Some(e) => {
                    *e = *until;
                    true
                }
                None => {
                    self.tokens.insert(jti.clone(), *until);
                    true
                }
            },
            Revocation::Subject { sub, before, until } => match self.subjects.get_mut(sub) {
                Some(e) if e.0 >= *before && e.1 >= *until => false,
                Some(e) => {
                    *e = (e.0.max(*before), e.1.max(*until));
                    true
                }
                None => {
                    self.subjects.insert(sub.clone(), (*before, *until));
                    true
                }
            },
        }
    }

    fn revokes(&self, claims: &Claims, now: u64) -> bool {
        if let Some(jti) = &claims.jti {
            if self.tokens.get(jti).is_some_and(|until| *until >= now) {
                return true;
            }
        }
        self.subjects.get(&claims.sub).is_some_and(|(before, until)| *until >= now && issued_by(claims.iat, *before))
    }

    fn drop_expired(&mut self, now: u64) {
        self.tokens.retain(|_, until| *until >= now);
        self.subjects.retain(|_, (_, until)| *until >= now);
    }

    fn entries(&self) -> Vec<Revocation> {
        let tokens = self.tokens.iter().map(|(jti, until)| Revocation::Token { jti: jti.clone(), until: *until });
        let subjects = self.subjects.iter().map(|(sub, (before, until))| Revocation::Subject {
            sub: sub.clone(),
            before: *before,
            until: *until,
        });
        tokens.chain(subjects).collect()
    }

    fn len(&self) -> usize {
        self.tokens.len() + self.subjects.len()
    }
}

/// The store of a single node: in memory, and in `server.state_dir` when one is set.
#[derive(Debug)]
pub struct LocalRevocations {
    set: RwLock<Set>,
    /// Bumped by every revocation added; 0: nothing was ever revoked in this process's state
    /// (the fast path). Sessions compare it before judging what they read.
    generation: AtomicU64,
    /// The append-only log, when persistent.
    log: Option<Mutex<Log>>,
    feed: broadcast::Sender<Revocation>,
}

#[derive(Debug)]
struct Log {
    path: PathBuf,
    file: File,
}

// === impl LocalRevocations ===

impl LocalRevocations {
    /// An in-memory store (nothing survives a restart).
    pub fn in_memory() -> Self {
        Self::with(Set::default(), None)
    }

    fn with(set: Set, log: Option<Log>) -> Self {
        let generation = u64::from(set.len() > 0);
        Self {
            set: RwLock::new(set),
            generation: AtomicU64::new(generation),
            log: log.map(Mutex::new),
            feed: broadcast::channel(FEED_CAPACITY).0,
        }
    }

    /// Open (or create) the log in `state_dir`, load the entries still in force and rewrite the
    /// file without the expired ones. Unreadable lines are skipped with a warning (a torn last
    /// line after a crash must not stop the gateway), never silently.
    ///
    /// # Errors
    /// The directory or file cannot be created, read or written.
    pub fn open(state_dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(state_dir)?;
        let path = state_dir.join(FILE_NAME);
        let mut set = Set::default();
        match File::open(&path) {
            Ok(f) => {
                for (n, line) in BufReader::new(f).lines().enumerate() {
                    let line = line?;
                    if line.trim().is_empty() {
                        continue;
                    }
                    match serde_json::from_str::<Revocation>(&line) {
                        Ok(r) => {
                            set.insert(&r);
                        }
                        Err(e) => {
                            tracing::warn!(file = %path.display(), line = n + 1, error = %e, "skipping unreadable revocation entry")
                        }
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        set.drop_expired(unix_now());
        let file = rewrite(&path, &set.entries())?;
        set.lines = set.len();
        Ok(Self::with(set, Some(Log { path, file })))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Set> {
        self.set.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Set> {
        self.set.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// True when `claims` are revoked at `now` (unix seconds).
    pub fn revokes(&self, claims: &Claims, now: u64) -> bool {
        self.generation() != 0 && self.read().revokes(claims, now)
    }

    /// Record `r`: appended and fsynced first (when persistent), then in force.
    ///
    /// # Errors
    /// Writing the log failed; the revocation is then in force in memory only and the caller
    /// must report that it will not survive a restart.
    pub fn add(&self, r: Revocation) -> std::io::Result<()> {
        let persisted = match &self.log {
            Some(log) => {
                let mut log = log.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let mut line = serde_json::to_vec(&r).map_err(std::io::Error::other)?;
                line.push(b'\n');
                log.file.write_all(&line).and_then(|()| log.file.sync_data())
            }
            None => Ok(()),
        };
        let mut set = self.write();
        set.insert(&r);
        set.lines += 1;
        drop(set);
        self.generation.fetch_add(1, Ordering::Release);
        // No follower is an error only for the follower (none runs in unit tests).
        let _ = self.feed.send(r);
        persisted
    }

    /// Put `r` in force and announce it, without persisting it (an entry another node
    /// revoked, read from the fleet's feed); false when it was already in force.
    pub fn learn(&self, r: Revocation) -> bool {
        if !self.write().insert(&r) {
            return false;
        }
        self.generation.fetch_add(1, Ordering::Release);
        let _ = self.feed.send(r);
        true
    }

    /// Every entry in force at `now`.
    pub fn entries(&self, now: u64) -> Vec<Revocation> {
        self.read().entries().into_iter().filter(|r| r.until() >= now).collect()
    }

    /// Changes with every revocation added (0 while there is none).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Forget expired entries; rewrite the log when they made up more than half of it.
    ///
    /// # Errors
    /// The rewrite failed (the old log stays in place and in use).
    pub fn compact(&self, now: u64) -> std::io::Result<()> {
        let Some(log) = &self.log else {
            self.write().drop_expired(now);
            return Ok(());
        };
        // The log lock keeps `add` out for the whole rewrite; the set's lock is only held to
        // take the snapshot, so handshakes are not held up by the file I/O.
        let mut log = log.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let entries = {
            let mut set = self.write();
            set.drop_expired(now);
            if set.lines <= 2 * set.len().max(8) {
                return Ok(());
            }
            set.entries()
        };
        log.file = rewrite(&log.path, &entries)?;
        self.write().lines = entries.len();
        Ok(())
    }

    /// Entries in force.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// True when nothing is revoked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl RevocationStore for LocalRevocations {
    fn add(&self, r: Revocation) -> BoxFuture<'_, Result<(), AddError>> {
        Box::pin(future::ready(LocalRevocations::add(self, r).map_err(AddError::from)))
    }

    fn check(&self, claims: &Claims, now: u64) -> bool {
        self.revokes(claims, now)
    }

    fn generation(&self) -> u64 {
        LocalRevocations::generation(self)
    }

    fn subscribe(&self) -> broadcast::Receiver<Revocation> {
        self.feed.subscribe()
    }

    fn compact(&self, now: u64) -> std::io::Result<()> {
        LocalRevocations::compact(self, now)
    }
}

/// Write `entries` to `path` atomically (temporary file, fsync, rename, fsync the directory)
/// and return the file opened for appending.
fn rewrite(path: &Path, entries: &[Revocation]) -> std::io::Result<File> {
    let tmp = path.with_extension("jsonl.tmp");
    {
        let mut f = File::create(&tmp)?;
        for r in entries {
            let mut line = serde_json::to_vec(r).map_err(std::io::Error::other)?;
            line.push(b'\n');
            f.write_all(&line)?;
        }
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    OpenOptions::new().append(true).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(sub: &str, jti: Option<&str>, iat: Option<u64>) -> Claims {
        Claims { sub: sub.into(), exp: 2_000, iat, jti: jti.map(Into::into), scopes: Vec::new() }
    }

    #[test]
    fn the_feed_announces_each_revocation_in_order_and_check_sees_it() {
        let r = LocalRevocations::in_memory();
        let store: &dyn RevocationStore = &r;
        let mut feed = store.subscribe();
        assert_eq!(store.generation(), 0);
        let token = Revocation::Token { jti: "j1".into(), until: 3_000 };
        let subject = Revocation::Subject { sub: "bob".into(), before: 1_500, until: 3_000 };
        for entry in [&token, &subject] {
            futures_util::FutureExt::now_or_never(store.add(entry.clone())).expect("ready").expect("added");
        }
        assert_eq!(feed.try_recv().ok().as_ref(), Some(&token));
        assert_eq!(feed.try_recv().ok().as_ref(), Some(&subject));
        assert_eq!(store.generation(), 2);
        assert!(store.check(&claims("alice", Some("j1"), None), 2_000));
        assert!(store.check(&claims("bob", None, Some(1_500)), 2_000));
        assert!(!store.check(&claims("bob", None, Some(1_501)), 2_000));
    }

    #[test]
    fn a_jti_is_revoked_until_its_exp() {
        let r = LocalRevocations::in_memory();
        assert!(!r.revokes(&claims("a", Some("t1"), None), 100));
        r.add(Revocation::Token { jti: "t1".into(), until: 1_000 }).expect("add");
        assert!(r.revokes(&claims("a", Some("t1"), None), 1_000));
        assert!(!r.revokes(&claims("a", Some("t2"), None), 1_000));
        assert!(!r.revokes(&claims("a", Some("t1"), None), 1_001), "expired entries stop counting");
    }

    #[test]
    fn a_subject_revocation_covers_tokens_issued_up_to_that_second() {
        let r = LocalRevocations::in_memory();
        r.add(Revocation::Subject { sub: "bob".into(), before: 500, until: 5_000 }).expect("add");
        assert!(r.revokes(&claims("bob", None, Some(499)), 600));
        assert!(r.revokes(&claims("bob", None, Some(500)), 600), "same second counts as before");
        assert!(!r.revokes(&claims("bob", None, Some(501)), 600), "a token issued later is fine");
        assert!(r.revokes(&claims("bob", None, None), 600), "no iat: cannot prove it is newer");
        assert!(!r.revokes(&claims("alice", None, Some(1)), 600));
    }

    #[test]
    fn entries_survive_a_reopen_and_expired_ones_are_compacted_away() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = unix_now();
        {
            let r = LocalRevocations::open(dir.path()).expect("open");
            r.add(Revocation::Token { jti: "live".into(), until: now + 3_600 }).expect("add");
            r.add(Revocation::Token { jti: "old".into(), until: now - 10 }).expect("add");
            r.add(Revocation::Subject { sub: "bob".into(), before: now, until: now + 60 }).expect("add");
        }
        // A torn last line (crash mid-write) is skipped, not fatal.
        let path = dir.path().join(FILE_NAME);
        let mut f = OpenOptions::new().append(true).open(&path).expect("append");
        f.write_all(b"{\"jti\":\"tor").expect("write");
        drop(f);
        let r = LocalRevocations::open(dir.path()).expect("reopen");
        assert!(r.revokes(&claims("x", Some("live"), None), now));
        assert!(!r.revokes(&claims("x", Some("old"), None), now));
        assert!(r.revokes(&claims("bob", None, Some(now)), now));
        assert_eq!(r.len(), 2);
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.lines().count(), 2, "rewritten without the expired and torn entries: {text}");
    }

    #[test]
    fn compaction_rewrites_a_log_that_is_mostly_expired() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = unix_now();
        let r = LocalRevocations::open(dir.path()).expect("open");
        for i in 0..30 {
            r.add(Revocation::Token { jti: format!("old-{i}"), until: now + 1 }).expect("add");
        }
        r.add(Revocation::Token { jti: "keep".into(), until: now + 3_600 }).expect("add");
        r.compact(now + 10).expect("compact");
        let text = std::fs::read_to_string(dir.path().join(FILE_NAME)).expect("read");
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(r.revokes(&claims("x", Some("keep"), None), now + 10));
        r.add(Revocation::Token { jti: "after".into(), until: now + 3_600 }).expect("append after a rewrite");
        let text = std::fs::read_to_string(dir.path().join(FILE_NAME)).expect("read");
        assert_eq!(text.lines().count(), 2, "{text}");
    }
}
