//! The cluster secret: where it comes from, the default secret file a master creates
//! under the flint home and every other node reads, and the type that holds it
//! without ever printing it.
//!
//! Where the secret comes from, first match wins ([`find`]):
//!
//! 1. `auth.enabled = false` (or `FLINT_AUTH_ENABLED=false`): no authentication.
//! 2. `auth.secret` (config file, `FLINT_AUTH_SECRET` merged into the settings, or
//!    `--conf`, which warns once: `ps` shows a command line to every user).
//! 3. The file named by `auth.secret_file` (or `FLINT_AUTH_SECRET_FILE`).
//! 4. The process environment's `FLINT_AUTH_SECRET`, then `FLINT_AUTH_SECRET_FILE`,
//!    for programs that do not merge the environment into their settings (executors
//!    get the secret this way from their worker, never on their command line).
//! 5. With `rpc.tls.enabled = true`: none; certificates authenticate peers.
//! 6. The default file `$FLINT_HOME/secret` (default home `~/.flint`). [`find`] only
//!    reads it and, when it is missing, fails naming it and the settings to use;
//!    [`find_or_create`] (masters) creates it with 256 random bits, hex-encoded.
//!
//! A secret file must be a regular file that group and others can neither read nor
//! write (mode 0600 or stricter), as ssh demands of a private key; otherwise it is
//! refused with the `chmod 600` that fixes it. A new file is written to a temporary
//! file created 0600 with `O_EXCL`, then published atomically under its name (a link,
//! so two masters starting at once agree on one secret), in a home created 0700.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::ffi::OsStringExt as _;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Once;

use flint_conf::{Conf, ConfError, Source};
use rand::RngCore as _;

use crate::error::RpcError;

/// Environment variable holding the secret itself (mapped to `auth.secret`).
pub const SECRET_ENV: &str = "FLINT_AUTH_SECRET";
/// Environment variable naming a secret file (mapped to `auth.secret_file`).
pub const SECRET_FILE_ENV: &str = "FLINT_AUTH_SECRET_FILE";
/// Environment variable that turns authentication off with `false` (`auth.enabled`).
pub const ENABLED_ENV: &str = "FLINT_AUTH_ENABLED";
/// Environment variable naming the flint home (default `~/.flint`).
pub const HOME_ENV: &str = "FLINT_HOME";
/// Name of the default secret file in the flint home.
pub const SECRET_FILE_NAME: &str = "secret";

/// Random bytes in a generated secret (256 bits).
const GENERATED_BYTES: usize = 32;
/// Largest secret file read; a secret is a line of text.
const MAX_SECRET_FILE: u64 = 64 << 10;

/// The cluster's shared secret. Debug never prints it; its bytes are zeroed when it
/// is dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub(crate) Vec<u8>);

impl Drop for Secret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl Secret {
    /// A secret from its bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Secret(bytes.into())
    }

    /// A fresh random secret: 256 bits from the operating system's generator,
    /// hex-encoded (64 characters), as written to a new secret file.
    pub fn generate() -> Self {
        let mut bytes = [0u8; GENERATED_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        Secret(hex::encode(bytes).into_bytes())
    }

    /// The secret's bytes, to hand it to a child process or write it to a file.
    /// Never log them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The secret as the value of [`SECRET_ENV`] in a child's environment.
    pub fn to_env_value(&self) -> OsString {
        OsString::from_vec(self.0.clone())
    }
}

/// Longest key id a client may present (bytes); a longer one is refused as malformed.
pub const MAX_KEY_ID: usize = 128;

/// A thread-safe map of key id → [`Secret`] that a server environment consults when a
/// client presents a key id in its hello ([`crate::RpcEnv::server_with_keyring`]). The
/// owner adds and removes keys at run time; clones share one map.
///
/// A key inserted with [`Keyring::insert_single_use`] is removed by the first handshake
/// that proves it, atomically, so a second connection with the same secret is refused
/// like a wrong one (two racing connections: exactly one wins).
#[derive(Clone, Default)]
pub struct Keyring {
    keys: std::sync::Arc<parking_lot::Mutex<std::collections::HashMap<String, KeyEntry>>>,
}

#[derive(Clone)]
struct KeyEntry {
    secret: Secret,
    single_use: bool,
}

impl Keyring {
    /// An empty keyring.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a key that any number of connections may prove.
    pub fn insert(&self, id: impl Into<String>, secret: Secret) {
        self.keys.lock().insert(
            id.into(),
            KeyEntry {
                secret,
                single_use: false,
            },
        );
    }

    /// Adds (or replaces) a key that exactly one connection may prove.
    pub fn insert_single_use(&self, id: impl Into<String>, secret: Secret) {
        self.keys.lock().insert(
            id.into(),
            KeyEntry {
                secret,
                single_use: true,
            },
        );
    }

    /// Removes a key; returns whether it was there. Connections that already proved it
    /// stay open ([`crate::RpcEnv::close_key_connections`] closes them).
    pub fn remove(&self, id: &str) -> bool {
        self.keys.lock().remove(id).is_some()
    }

    /// Whether the key is present (a single-use key is gone once a connection proved it).
    pub fn contains(&self, id: &str) -> bool {
        self.keys.lock().contains_key(id)
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.keys.lock().len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.keys.lock().is_empty()
    }

    /// The secret of `id` and whether it is single-use.
    pub(crate) fn lookup(&self, id: &str) -> Option<(Secret, bool)> {
        self.keys
            .lock()
            .get(id)
            .map(|e| (e.secret.clone(), e.single_use))
    }

    /// Consumes a single-use key that a handshake just proved with `secret`: true if
    /// this caller removed it (the first to prove it), false if it was already gone
    /// or replaced by another secret meanwhile.
    pub(crate) fn consume(&self, id: &str, secret: &Secret) -> bool {
        let mut keys = self.keys.lock();
        match keys.get(id) {
            Some(e) if e.single_use && e.secret == *secret => {
                keys.remove(id);
                true
            }
            Some(e) => !e.single_use && e.secret == *secret,
            None => false,
        }
    }
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = self.keys.lock();
        let mut ids: Vec<&str> = keys.keys().map(String::as_str).collect();
        ids.sort_unstable();
        f.debug_struct("Keyring").field("ids", &ids).finish()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A fresh random secret for a cluster that lives in one process (examples, tests):
/// nothing is written anywhere.
pub fn ephemeral() -> Secret {
    Secret::generate()
}

/// `conf` with `auth.secret` set to a fresh [`ephemeral`] secret, for in-process
/// clusters and tests whose nodes share one `Conf`.
pub fn with_ephemeral(conf: Conf) -> Conf {
    let secret = ephemeral();
    conf.set(
        "auth.secret",
        String::from_utf8_lossy(&secret.0).into_owned(),
    )
}

/// Where the secret in use came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// `auth.enabled = false`: no authentication.
    Disabled,
    /// No secret: TLS with client certificates authenticates peers.
    Tls,
    /// The `auth.secret` setting; `command_line` when it came from `--conf`.
    Setting {
        /// Given on the command line, where `ps` shows it.
        command_line: bool,
    },
    /// [`SECRET_ENV`] in the process environment.
    Env,
    /// A configured file (`auth.secret_file` or [`SECRET_FILE_ENV`]).
    File(PathBuf),
    /// The default file under the flint home.
    DefaultFile {
        /// `$FLINT_HOME/secret`.
        path: PathBuf,
        /// Whether this call created it.
        created: bool,
    },
}

/// A resolved secret and where it came from.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The secret; `None` when authentication is off or TLS authenticates.
    pub secret: Option<Secret>,
    /// Where it came from.
    pub source: SecretSource,
}

impl Resolved {
    /// The file the secret was read from, if it came from one.
    pub fn file(&self) -> Option<&Path> {
        match &self.source {
            SecretSource::File(p) | SecretSource::DefaultFile { path: p, .. } => Some(p),
            _ => None,
        }
    }
}

/// Resolves the secret from `conf` and the environment in the order of the
/// [module docs](self); never creates a file. `Ok(None)` only with
/// `auth.enabled = false` or TLS.
pub fn resolve(conf: &Conf) -> Result<Option<Secret>, RpcError> {
    Ok(find(conf)?.secret)
}

/// [`resolve`], saying where the secret came from. Fails when no secret is
/// configured and the default file does not exist, naming the file and the settings.
pub fn find(conf: &Conf) -> Result<Resolved, RpcError> {
    find_with(conf, &process_var, false)
}

/// [`find`] for a master (or a process that runs one): when no secret is configured
/// and the default file does not exist, creates it with a fresh random secret.
pub fn find_or_create(conf: &Conf) -> Result<Resolved, RpcError> {
    find_with(conf, &process_var, true)
}

/// The flint home: `$FLINT_HOME`, else `$HOME/.flint`.
pub fn flint_home() -> Result<PathBuf, RpcError> {
    home_with(&process_var)
}

/// The default secret file, `<flint home>/secret`.
pub fn default_secret_file() -> Result<PathBuf, RpcError> {
    Ok(flint_home()?.join(SECRET_FILE_NAME))
}

fn process_var(name: &str) -> Option<OsString> {
    std::env::var_os(name).filter(|v| !v.is_empty())
}

type Vars<'a> = &'a dyn Fn(&str) -> Option<OsString>;

fn unusable(key: &str, message: String) -> RpcError {
    ConfError::Unusable {
        key: key.into(),
        message,
    }
    .into()
}

fn home_with(var: Vars<'_>) -> Result<PathBuf, RpcError> {
    if let Some(home) = var(HOME_ENV) {
        return Ok(PathBuf::from(home));
    }
    match var("HOME") {
        Some(home) => Ok(PathBuf::from(home).join(".flint")),
        None => Err(unusable(
            "auth.secret_file",
            format!(
                "cannot find the flint home for the cluster secret: neither {HOME_ENV} nor \
                 HOME is set; set {HOME_ENV}, or point auth.secret_file ({SECRET_FILE_ENV}) \
                 at the secret file"
            ),
        )),
    }
}

fn enabled(conf: &Conf, var: Vars<'_>) -> Result<bool, RpcError> {
    if conf.get("auth.enabled").is_some() {
        return Ok(conf.bool("auth.enabled", true)?);
    }
    match var(ENABLED_ENV) {
        None => Ok(true),
        Some(v) => {
            let text = v.to_string_lossy().into_owned();
            Conf::new()
                .set(ENABLED_ENV, text)
                .bool(ENABLED_ENV, true)
                .map_err(Into::into)
        }
    }
}

fn find_with(conf: &Conf, var: Vars<'_>, create: bool) -> Result<Resolved, RpcError> {
    let found = |secret: Secret, source| {
        Ok(Resolved {
            secret: Some(secret),
            source,
        })
    };
    if !enabled(conf, var)? {
        return Ok(Resolved {
            secret: None,
            source: SecretSource::Disabled,
        });
    }
    if let Some(s) = conf.get("auth.secret") {
        let command_line = conf.source("auth.secret") == Some(Source::Override);
        if command_line {
            warn_command_line();
        }
        let secret = checked(s.as_bytes().to_vec(), "auth.secret", "the secret")?;
        return found(secret, SecretSource::Setting { command_line });
    }
    if let Some(path) = conf.get("auth.secret_file") {
        let path = PathBuf::from(path);
        let secret = read_secret_file(&path, "auth.secret_file")?
            .ok_or_else(|| missing_configured(&path, "auth.secret_file"))?;
        return found(secret, SecretSource::File(path));
    }
    if let Some(s) = var(SECRET_ENV) {
        let secret = checked(s.into_vec(), SECRET_ENV, "the secret")?;
        return found(secret, SecretSource::Env);
    }
    if let Some(path) = var(SECRET_FILE_ENV) {
        let path = PathBuf::from(path);
        let secret = read_secret_file(&path, SECRET_FILE_ENV)?
            .ok_or_else(|| missing_configured(&path, SECRET_FILE_ENV))?;
        return found(secret, SecretSource::File(path));
    }
    if conf.bool("rpc.tls.enabled", false)? {
        return Ok(Resolved {
            secret: None,
            source: SecretSource::Tls,
        });
    }
    let path = home_with(var)?.join(SECRET_FILE_NAME);
    if create {
        let (secret, created) = load_or_create(&path)?;
        return found(secret, SecretSource::DefaultFile { path, created });
    }
    match read_secret_file(&path, "auth.secret_file")? {
        Some(secret) => found(
            secret,
            SecretSource::DefaultFile {
                path,
                created: false,
            },
        ),
        None => Err(no_secret(&path)),
    }
}

fn warn_command_line() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        tracing::warn!(
            "auth.secret was given on the command line (--conf), where `ps` shows it to \
             every user of this machine; put the secret in a file only you can read \
             (chmod 600) and set auth.secret_file ({SECRET_FILE_ENV}) instead"
        );
    });
}

fn no_secret(path: &Path) -> RpcError {
    let p = path.display();
    unusable(
        "auth.secret_file",
        format!(
            "no cluster secret: {p} does not exist and none is configured. A master \
             (`flint master`, `flint local`) creates that file when it first starts; run \
             this process as the same user with the same {HOME_ENV} (or HOME), or copy the \
             master's secret file to {p} with mode 0600 (`flint start-cluster` does this for \
             the hosts in conf/workers), or set auth.secret_file ({SECRET_FILE_ENV}) to a \
             copy of it, or auth.secret ({SECRET_ENV}) to the secret itself. To run without \
             authentication, where anyone who can reach the cluster's ports can run commands \
             on its workers, set auth.enabled = false on every node"
        ),
    )
}

fn missing_configured(path: &Path, key: &str) -> RpcError {
    unusable(
        key,
        format!(
            "the secret file {} (set by {key}) does not exist; copy the cluster's secret \
             file there (mode 0600) or point {key} at it",
            path.display()
        ),
    )
}

/// Trims a trailing newline and checks the secret is usable.
fn checked(mut bytes: Vec<u8>, key: &str, what: &str) -> Result<Secret, RpcError> {
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    if bytes.is_empty() {
        return Err(ConfError::Invalid {
            key: key.into(),
            value: String::new(),
            reason: format!("{what} is empty"),
        }
        .into());
    }
    if bytes.contains(&0) {
        return Err(unusable(
            key,
            format!(
                "{what} ({key}) contains a NUL byte, so it cannot be handed to child \
                 processes; use text, e.g. the output of `openssl rand -hex 32`"
            ),
        ));
    }
    Ok(Secret(bytes))
}

/// Reads a secret file: `Ok(None)` when it does not exist; an error naming the file
/// when it cannot be read, is not a regular file, is open to group or others
/// (with the `chmod 600` that fixes it), or holds no usable secret. `key` is the
/// setting that named the file, for messages.
pub fn read_secret_file(path: &Path, key: &str) -> Result<Option<Secret>, RpcError> {
    let p = path.display();
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(unusable(
                key,
                format!("cannot read the secret file {p}: {e}"),
            ))
        }
    };
    // The checks use the open file's own metadata, so they hold for what is read.
    let meta = file
        .metadata()
        .map_err(|e| unusable(key, format!("cannot inspect the secret file {p}: {e}")))?;
    if !meta.is_file() {
        return Err(unusable(
            key,
            format!("the secret file {p} is not a regular file"),
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(unusable(
            key,
            format!(
                "the secret file {p} is accessible by group or others (mode {mode:04o}), so \
                 it is refused: anyone who can read it can run commands on the cluster's \
                 workers. Make it private with `chmod 600 {p}`"
            ),
        ));
    }
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| unusable(key, format!("cannot read the secret file {p}: {e}")))?;
    if bytes.len() as u64 > MAX_SECRET_FILE {
        return Err(unusable(
            key,
            format!("the secret file {p} is over {MAX_SECRET_FILE} bytes; a secret is one line"),
        ));
    }
    checked(bytes, key, &format!("the secret file {p}")).map(Some)
}

/// Reads the secret file at `path`, or creates it with a fresh [`Secret::generate`]
/// (its directory 0700 if missing, the file 0600, published atomically). Returns the
/// secret and whether this call created it. If another process creates the file at
/// the same moment, both end up with the same secret.
pub fn load_or_create(path: &Path) -> Result<(Secret, bool), RpcError> {
    const KEY: &str = "auth.secret_file";
    if let Some(s) = read_secret_file(path, KEY)? {
        return Ok((s, false));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| {
            unusable(
                KEY,
                format!(
                    "cannot create the directory {} for the cluster secret: {e}; set \
                     {HOME_ENV} to a directory you can write, or auth.secret_file",
                    dir.display()
                ),
            )
        })?;
    let secret = Secret::generate();
    let mut tag = [0u8; 6];
    rand::rng().fill_bytes(&mut tag);
    let tmp = dir.join(format!(
        ".{SECRET_FILE_NAME}.{}.{}.tmp",
        std::process::id(),
        hex::encode(tag)
    ));
    let write_err = |e: io::Error| {
        unusable(
            KEY,
            format!("cannot write the secret file {}: {e}", path.display()),
        )
    };
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&secret.0)?;
        f.write_all(b"\n")?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(write_err(e));
    }
    // A hard link publishes the complete file under its name, or fails if another
    // process got there first, whose secret is then the one to use.
    let published = match fs::hard_link(&tmp, path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        // File systems without hard links: rename, which is atomic too.
        Err(_) => fs::rename(&tmp, path).map(|()| true),
    };
    let _ = fs::remove_file(&tmp);
    match published.map_err(write_err)? {
        true => {
            if let Ok(d) = File::open(&dir) {
                let _ = d.sync_all();
            }
            tracing::info!(
                "created a new cluster secret in {} (mode 0600)",
                path.display()
            );
            Ok((secret, true))
        }
        false => read_secret_file(path, KEY)?
            .map(|s| (s, false))
            .ok_or_else(|| no_secret(path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keyring_counts_removes_and_consumes_exactly() {
        let k = Keyring::new();
        assert!(k.is_empty());
        assert_eq!(k.len(), 0);
        let (a, b) = (Secret::new("secret-a"), Secret::new("secret-b"));
        k.insert("a", a.clone());
        k.insert_single_use("b", b.clone());
        assert_eq!(k.len(), 2);
        assert!(!k.is_empty());
        // A multi-use key proves with its own secret only, and stays.
        assert!(k.consume("a", &a));
        assert!(!k.consume("a", &b));
        assert!(k.contains("a"));
        // A single-use key: a wrong secret leaves it; the right one uses it up, once.
        assert!(!k.consume("b", &a));
        assert!(k.contains("b"));
        assert!(k.consume("b", &b));
        assert!(!k.contains("b"));
        assert!(!k.consume("b", &b));
        assert!(!k.consume("nobody", &a));
        // Debug names the ids, never a secret.
        let shown = format!("{k:?}");
        assert_eq!(shown, r#"Keyring { ids: ["a"] }"#);
        assert!(k.remove("a"));
        assert!(!k.remove("a"));
        assert_eq!(k.len(), 0);
        assert!(k.is_empty());
    }
    use std::collections::HashMap;
    use std::os::unix::fs::PermissionsExt as _;

    fn vars(pairs: &[(&str, &Path)]) -> impl Fn(&str) -> Option<OsString> {
        let map: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_os_str().to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn private(path: &Path, text: &str) {
        fs::write(path, text).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().mode() & 0o777
    }

    #[test]
    fn secret_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        private(&p, "s3cret\n");
        let c =
            crate::RpcConf::from_conf(&Conf::new().set("auth.secret_file", p.to_str().unwrap()))
                .unwrap();
        assert_eq!(c.secret.unwrap().0, b"s3cret");
        let e = crate::RpcConf::from_conf(&Conf::new().set("auth.secret_file", "/nonexistent/x"))
            .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/x"), "{e}");
        assert!(e.to_string().contains("auth.secret_file"), "{e}");
    }

    #[test]
    fn a_master_creates_the_default_file_private_and_reuses_it() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("a/flint-home");
        let env = vars(&[(HOME_ENV, &home)]);
        let r = find_with(&Conf::new(), &env, true).unwrap();
        let path = home.join("secret");
        assert_eq!(
            r.source,
            SecretSource::DefaultFile {
                path: path.clone(),
                created: true
            }
        );
        let secret = r.secret.unwrap();
        assert_eq!(secret.0.len(), 64);
        assert!(secret.0.iter().all(u8::is_ascii_hexdigit));
        assert_eq!(fs::read(&path).unwrap(), [&secret.0[..], b"\n"].concat());
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&home), 0o700);
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(&home).unwrap().count(), 1);
        // Reused by the next master, and found by everyone else.
        for create in [true, false] {
            let again = find_with(&Conf::new(), &env, create).unwrap();
            assert_eq!(again.secret.as_ref(), Some(&secret));
            assert_eq!(
                again.source,
                SecretSource::DefaultFile {
                    path: path.clone(),
                    created: false
                }
            );
        }
    }

    #[test]
    fn without_a_file_others_fail_naming_it_and_create_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let env = vars(&[("HOME", dir.path())]);
        let e = find_with(&Conf::new(), &env, false)
            .unwrap_err()
            .to_string();
        let path = dir.path().join(".flint/secret");
        assert!(e.contains(&path.display().to_string()), "{e}");
        for needle in [
            "auth.secret_file",
            "FLINT_AUTH_SECRET_FILE",
            "auth.secret ",
            "FLINT_AUTH_SECRET)",
            "auth.enabled = false",
        ] {
            assert!(e.contains(needle), "{needle:?} missing from {e}");
        }
        assert!(!dir.path().join(".flint").exists());
        // The default home is ~/.flint, created 0700 by a master.
        find_with(&Conf::new(), &env, true).unwrap();
        assert_eq!(mode(&dir.path().join(".flint")), 0o700);
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn a_file_open_to_group_or_others_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        private(&p, "abc");
        for bad in [0o640, 0o604, 0o620, 0o644] {
            fs::set_permissions(&p, fs::Permissions::from_mode(bad)).unwrap();
            let env = vars(&[(HOME_ENV, dir.path())]);
            for create in [false, true] {
                let e = find_with(&Conf::new(), &env, create)
                    .unwrap_err()
                    .to_string();
                assert!(e.contains(&format!("chmod 600 {}", p.display())), "{e}");
                assert!(e.contains(&format!("mode {bad:04o}")), "{e}");
            }
            let conf = Conf::new().set("auth.secret_file", p.to_str().unwrap());
            let e = find_with(&conf, &vars(&[]), false).unwrap_err().to_string();
            assert!(e.contains("chmod 600"), "{e}");
            // Refused, not replaced.
            assert_eq!(fs::read(&p).unwrap(), b"abc");
        }
        fs::set_permissions(&p, fs::Permissions::from_mode(0o400)).unwrap();
        let env = vars(&[(HOME_ENV, dir.path())]);
        assert_eq!(
            find_with(&Conf::new(), &env, false)
                .unwrap()
                .secret
                .unwrap()
                .0,
            b"abc"
        );
    }

    #[test]
    fn precedence_disabled_setting_file_env_tls_default() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("configured");
        private(&file, "from-file\n");
        let env_file = dir.path().join("env-file");
        private(&env_file, "from-env-file");
        let home = dir.path().join("home");
        fs::create_dir(&home).unwrap();
        private(&home.join("secret"), "from-home");
        let all = |k: &str| -> Option<OsString> {
            match k {
                SECRET_ENV => Some("from-env".into()),
                SECRET_FILE_ENV => Some(env_file.clone().into()),
                HOME_ENV => Some(home.clone().into()),
                _ => None,
            }
        };
        let file_s = file.to_str().unwrap();
        let get = |conf: &Conf, var: Vars<'_>| {
            let r = find_with(conf, var, false).unwrap();
            (
                r.secret.map(|s| String::from_utf8(s.0.clone()).unwrap()),
                r.source,
            )
        };
        let full = Conf::new()
            .set("auth.secret", "inline")
            .set("auth.secret_file", file_s);
        assert_eq!(
            get(&full.clone().set("auth.enabled", "false"), &all),
            (None, SecretSource::Disabled)
        );
        let off = |k: &str| (k == ENABLED_ENV).then(|| OsString::from("false"));
        assert_eq!(get(&full, &off), (None, SecretSource::Disabled));
        assert_eq!(
            get(&full, &all),
            (
                Some("inline".into()),
                SecretSource::Setting {
                    command_line: false
                }
            )
        );
        let mut flagged = Conf::new();
        flagged
            .merge_overrides(["auth.secret=typed"])
            .expect("key=value");
        assert_eq!(
            get(&flagged, &all).1,
            SecretSource::Setting { command_line: true }
        );
        let conf = Conf::new().set("auth.secret_file", file_s);
        assert_eq!(
            get(&conf, &all),
            (Some("from-file".into()), SecretSource::File(file.clone()))
        );
        assert_eq!(
            get(&Conf::new(), &all),
            (Some("from-env".into()), SecretSource::Env)
        );
        let no_env = |k: &str| (k != SECRET_ENV).then(|| all(k)).flatten();
        assert_eq!(
            get(&Conf::new(), &no_env),
            (
                Some("from-env-file".into()),
                SecretSource::File(env_file.clone())
            )
        );
        let home_only = |k: &str| (k == HOME_ENV).then(|| all(k)).flatten();
        let tls = Conf::new().set("rpc.tls.enabled", "true");
        assert_eq!(get(&tls, &home_only), (None, SecretSource::Tls));
        assert_eq!(
            get(&Conf::new(), &home_only),
            (
                Some("from-home".into()),
                SecretSource::DefaultFile {
                    path: home.join("secret"),
                    created: false
                }
            )
        );
        // auth.enabled must be a boolean.
        let e = find_with(&Conf::new().set("auth.enabled", "maybe"), &all, false).unwrap_err();
        assert!(e.to_string().contains("auth.enabled"), "{e}");
    }

    #[test]
    fn empty_or_nul_secrets_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        private(&p, "\n");
        let conf = Conf::new().set("auth.secret_file", p.to_str().unwrap());
        let e = find_with(&conf, &vars(&[]), false).unwrap_err().to_string();
        assert!(
            e.contains("empty") && e.contains(&p.display().to_string()),
            "{e}"
        );
        fs::write(&p, b"ab\0cd").unwrap();
        let e = find_with(&conf, &vars(&[]), false).unwrap_err().to_string();
        assert!(e.contains("NUL"), "{e}");
        let e = find_with(&Conf::new().set("auth.secret", ""), &vars(&[]), false).unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
    }

    #[test]
    fn masters_starting_at_once_agree_on_one_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("home/secret");
        let results: Vec<(Secret, bool)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| load_or_create(&path).unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let first = &results[0].0;
        assert!(results.iter().all(|(s, _)| s == first));
        assert_eq!(results.iter().filter(|(_, created)| *created).count(), 1);
        assert_eq!(fs::read_dir(dir.path().join("home")).unwrap().count(), 1);
    }

    #[test]
    fn generated_secrets_differ_and_debug_hides_them() {
        let (a, b) = (Secret::generate(), ephemeral());
        assert_ne!(a, b);
        assert_eq!(format!("{a:?}"), "Secret(<redacted>)");
        let conf = with_ephemeral(Conf::new());
        assert_eq!(conf.get("auth.secret").map(str::len), Some(64));
        assert_eq!(a.to_env_value().len(), 64);
    }
}
