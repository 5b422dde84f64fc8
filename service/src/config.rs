//! One way to configure every Ordo process.
//!
//! - Every flag can also be set in the environment as `ORDO_<PROCESS>_<SETTING>`, where
//!   `<SETTING>` is the flag's long name in upper case with `_` for `-`: `--db-max-connections`
//!   of the command API is `ORDO_COMMAND_DB_MAX_CONNECTIONS`. A flag on the command line wins.
//! - Settings every process shares ([`SHARED`]: the database, the Kafka brokers, migrations at
//!   start, token verification) may be given once for all processes as `ORDO_<SETTING>`
//!   (`ORDO_DATABASE_URL`, `ORDO_KAFKA_BROKERS`, `ORDO_JWT_ISSUER`, ...); a process's own
//!   variable wins over the shared one.
//! - Secrets are environment-only ([`Process::secret`]): the database URL (it may hold a
//!   password), the JWT secret and the event signing key have no flag, so they appear neither
//!   in process listings nor in `--help`, and [`Secret`] keeps them out of `Debug` output.
//! - Names of earlier releases keep working for one release ([`Process::deprecated`]): the value
//!   is used and a warning names the variable to set instead.
//!
//! The setting groups that several processes flatten into their clap structs live here:
//! [`DatabaseArgs`], [`KafkaArgs`], [`HttpArgs`] and [`OpsArgs`]; token verification is
//! [`crate::AuthSettings`].

use std::ffi::OsString;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches};

/// The database a process uses when no URL is configured: local, trust authentication.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/ordo";

/// The Kafka bootstrap servers a process uses when none are configured.
pub const DEFAULT_KAFKA_BROKERS: &str = "127.0.0.1:9092";

/// Settings that may be given once for every process as `ORDO_<SETTING>`.
pub const SHARED: &[&str] = &[
    "DATABASE_URL",
    "MIGRATE",
    "KAFKA_BROKERS",
    "JWT_SECRET",
    "JWT_JWKS_URL",
    "JWT_ISSUER",
    "JWT_AUDIENCE",
    "JWT_ROLE_CLAIM",
    "JWT_JWKS_CACHE_SECS",
    "JWT_JWKS_MIN_REFRESH_SECS",
    "EVENT_SIGNING_KEY",
    "PERSONAL_DATA_KEK",
    "PERSONAL_DATA_KEK_PREVIOUS",
    "RELAY_NAME",
];

/// Settings that must be equal in every process and so exist only as `ORDO_<SETTING>`.
pub const SHARED_ONLY: &[&str] = &["EVENT_SIGNING_KEY", "PERSONAL_DATA_KEK", "PERSONAL_DATA_KEK_PREVIOUS"];

/// A secret setting's value: never in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// One Ordo process: its binary name, the `<PROCESS>` part of its variables, and the
/// variable names of earlier releases it still honours.
#[derive(Debug, Clone, Copy)]
pub struct Process {
    /// The binary's name, e.g. `command-api`.
    pub binary: &'static str,
    /// The `<PROCESS>` of `ORDO_<PROCESS>_<SETTING>`, e.g. `COMMAND`.
    pub prefix: &'static str,
    /// `(old variable, setting)`: the old name still sets `<SETTING>`, with a warning.
    pub deprecated: &'static [(&'static str, &'static str)],
    /// The secrets this process reads (settings, e.g. `JWT_SECRET`), listed in `--help`.
    pub secrets: &'static [&'static str],
}

/// Where a setting's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The variable read.
    pub var: String,
    /// The variable to set instead, when `var` is a deprecated name.
    pub instead_of: Option<String>,
}

impl Process {
    /// `ORDO_<PROCESS>_<SETTING>`.
    pub fn var(&self, setting: &str) -> String {
        format!("ORDO_{}_{setting}", self.prefix)
    }

    /// The variables that may hold `setting`, best first: the process's own, the shared one
    /// (for [`SHARED`] settings), then deprecated names.
    pub fn candidates(&self, setting: &str) -> Vec<Source> {
        let own = self.var(setting);
        let mut out = Vec::new();
        if !SHARED_ONLY.contains(&setting) {
            out.push(Source { var: own.clone(), instead_of: None });
        }
        if SHARED.contains(&setting) {
            out.push(Source { var: format!("ORDO_{setting}"), instead_of: None });
        }
        let preferred = if SHARED.contains(&setting) { format!("ORDO_{setting}") } else { own };
        out.extend(
            self.deprecated
                .iter()
                .filter(|(_, s)| *s == setting)
                .map(|(old, _)| Source { var: (*old).to_owned(), instead_of: Some(preferred.clone()) }),
        );
        out
    }

    /// The variable `setting` is read from, given which variables are set: the first candidate
    /// that is set, or the process's own name when none is.
    pub fn source(&self, setting: &str, is_set: impl Fn(&str) -> bool) -> Source {
        let candidates = self.candidates(setting);
        candidates
            .iter()
            .find(|c| is_set(&c.var))
            .cloned()
            .unwrap_or_else(|| candidates.into_iter().next().expect("every setting has a variable"))
    }

    /// An environment-only setting (a secret), from the first of its variables that is set and
    /// not blank. A deprecated name is used with a warning.
    pub fn secret(&self, setting: &str) -> Option<Secret> {
        let value = |var: &str| std::env::var(var).ok().filter(|v| !v.trim().is_empty());
        let source = self.source(setting, |var| value(var).is_some());
        let found = value(&source.var)?;
        warn_deprecated(&source);
        Some(Secret(found))
    }

    /// The database URL (`ORDO_<PROCESS>_DATABASE_URL`, `ORDO_DATABASE_URL`), or
    /// [`DEFAULT_DATABASE_URL`].
    pub fn database_url(&self) -> Secret {
        self.secret("DATABASE_URL").unwrap_or_else(|| Secret::new(DEFAULT_DATABASE_URL))
    }

    /// `A`'s clap command with every flag bound to its variable, per-process defaults applied
    /// (`(argument id, value)`) and the environment conventions in `--help`.
    pub fn command<A: CommandFactory>(
        &self,
        defaults: &[(&str, &str)],
        is_set: impl Fn(&str) -> bool,
    ) -> clap::Command {
        let mut cmd = A::command().name(self.binary).mut_args(|arg| {
            let Some(long) = arg.get_long().map(str::to_owned) else { return arg };
            let setting = long.replace('-', "_").to_ascii_uppercase();
            let source = self.source(&setting, &is_set);
            arg.env(source.var)
        });
        for (id, value) in defaults {
            cmd = cmd.mut_arg(*id, |a| a.default_value(value.to_string()));
        }
        let secrets = self
            .secrets
            .iter()
            .map(|s| {
                let names: Vec<_> =
                    self.candidates(s).into_iter().filter(|c| c.instead_of.is_none()).map(|c| c.var).collect();
                format!("  {}", names.join(" or "))
            })
            .collect::<Vec<_>>()
            .join("\n");
        cmd.after_help(format!(
            "Every flag may be set as ORDO_{p}_<FLAG> instead (shown as [env: ...]). Database, Kafka and token \
             settings may be set once for every process as ORDO_<FLAG>, e.g. ORDO_KAFKA_BROKERS.\n\nSecrets, from \
             the environment only and never printed:\n{secrets}",
            p = self.prefix
        ))
    }

    /// Parses the command line and the environment into `A`. `--help`, `--version` and invalid
    /// flags end the process the way clap does (exit code 2 for an error). Deprecated variables
    /// in use are warned about.
    pub fn parse<A: CommandFactory + FromArgMatches>(&self, defaults: &[(&str, &str)]) -> A {
        self.try_parse_from(std::env::args_os(), defaults).unwrap_or_else(|e| e.exit())
    }

    /// [`Process::parse`] from the given arguments (the first is the program name).
    ///
    /// # Errors
    /// clap's error for an invalid flag or value (or the help text, as clap returns it).
    pub fn try_parse_from<A, I, T>(&self, args: I, defaults: &[(&str, &str)]) -> Result<A, clap::Error>
    where
        A: CommandFactory + FromArgMatches,
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let is_set = |var: &str| std::env::var_os(var).is_some();
        let matches = self.command::<A>(defaults, is_set).try_get_matches_from(args)?;
        self.warn_deprecated_flags();
        A::from_arg_matches(&matches)
    }

    fn warn_deprecated_flags(&self) {
        for (old, setting) in self.deprecated {
            if self.secrets.contains(setting) {
                continue; // warned about when the secret is read
            }
            let source = self.source(setting, |var| std::env::var_os(var).is_some());
            if source.var == *old {
                warn_deprecated(&source);
            }
        }
    }
}

/// A process's flags with the process they belong to and its defaults: parsing binds every flag
/// to its variables ([`Process::command`]).
pub trait ProcessArgs: CommandFactory + FromArgMatches + Sized {
    /// The process these flags configure.
    const PROCESS: Process;
    /// The process's defaults where they differ from the shared groups' (argument id, value).
    const DEFAULTS: &'static [(&'static str, &'static str)];

    /// The command line and the environment of this process; see [`Process::parse`].
    fn load_args() -> Self {
        Self::PROCESS.parse(Self::DEFAULTS)
    }

    /// Flags given as arguments (the first is the program name) with the process's defaults.
    ///
    /// # Errors
    /// clap's error for an invalid flag or value.
    fn parse_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        Self::PROCESS.try_parse_from(args, Self::DEFAULTS)
    }
}

fn warn_deprecated(source: &Source) {
    if let Some(instead) = &source.instead_of {
        tracing::warn!(
            variable = %source.var,
            instead = %instead,
            "deprecated configuration variable: it still works in this release; set the new name instead"
        );
        eprintln!("warning: {} is deprecated; set {instead} instead", source.var);
    }
}

/// The database settings of a process. The URL is a secret: [`Process::database_url`].
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Database")]
pub struct DatabaseArgs {
    /// Connections in this process's pool.
    #[arg(long = "db-max-connections", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Apply pending schema migrations at start (needs a role with DDL rights). Without it, a
    /// schema that is behind stops the process with a message to run `ordo migrate`.
    #[arg(long = "migrate")]
    pub migrate: bool,
}

/// The Kafka settings of a process. librdkafka properties (TLS, SASL, ...) come from
/// `ORDO_KAFKA_<PROPERTY>` variables.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Kafka")]
pub struct KafkaArgs {
    /// Kafka bootstrap servers, comma-separated.
    #[arg(long = "kafka-brokers", alias = "brokers", default_value = DEFAULT_KAFKA_BROKERS)]
    pub brokers: String,
}

/// The HTTP settings of an API process.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "HTTP")]
pub struct HttpArgs {
    /// Address the API listens on.
    #[arg(long = "addr", default_value = "127.0.0.1:0")]
    pub addr: SocketAddr,
    /// Largest accepted request body in bytes; larger ones get 413.
    #[arg(long = "body-limit-bytes", default_value_t = 64 * 1024)]
    pub body_limit_bytes: usize,
    /// Requests running longer (in milliseconds) are answered 503.
    #[arg(long = "request-timeout-ms", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout_ms: u64,
}

impl HttpArgs {
    /// The request limits these settings give.
    pub fn limits(&self) -> crate::http::Limits {
        crate::http::Limits {
            body_bytes: self.body_limit_bytes,
            timeout: Duration::from_millis(self.request_timeout_ms),
        }
    }
}

/// The ops listener of a worker (a process without an HTTP API).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Operations")]
pub struct OpsArgs {
    /// Address of `/healthz`, `/readyz` and `/metrics`.
    #[arg(long = "ops-addr", default_value = "127.0.0.1:0")]
    pub ops_addr: SocketAddr,
}

/// Logs an unusable configuration and gives the exit code for it (2, as for a bad flag).
pub fn refused(error: &dyn std::fmt::Display) -> ExitCode {
    tracing::error!(error = %error, "invalid configuration");
    eprintln!("error: invalid configuration: {error}");
    ExitCode::from(2)
}

/// The exit code for how a process's run ended: 0 after a clean shutdown, 1 after a failure
/// (logged with its cause chain).
pub fn exit_code(process: &Process, result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => {
            tracing::info!(process = process.binary, "stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(process = process.binary, error = format!("{e:#}"), "failed");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUERY: Process = Process {
        binary: "query-api",
        prefix: "QUERY",
        deprecated: &[("ORDO_QUERY_DB_CONNECTIONS", "DB_MAX_CONNECTIONS"), ("DATABASE_URL", "DATABASE_URL")],
        secrets: &["DATABASE_URL", "JWT_SECRET"],
    };

    #[test]
    fn a_process_variable_wins_over_the_shared_one_which_wins_over_a_deprecated_one() {
        let set = |vars: &'static [&'static str]| move |v: &str| vars.contains(&v);
        assert_eq!(QUERY.source("DATABASE_URL", set(&[])).var, "ORDO_QUERY_DATABASE_URL");
        let old = QUERY.source("DATABASE_URL", set(&["DATABASE_URL"]));
        assert_eq!(old, Source { var: "DATABASE_URL".into(), instead_of: Some("ORDO_DATABASE_URL".into()) });
        assert_eq!(QUERY.source("DATABASE_URL", set(&["DATABASE_URL", "ORDO_DATABASE_URL"])).var, "ORDO_DATABASE_URL");
        let all = set(&["DATABASE_URL", "ORDO_DATABASE_URL", "ORDO_QUERY_DATABASE_URL"]);
        assert_eq!(QUERY.source("DATABASE_URL", all).var, "ORDO_QUERY_DATABASE_URL");
        // A process-specific setting has no shared name; its old name points at the new one.
        let pool = QUERY.source("DB_MAX_CONNECTIONS", set(&["ORDO_DB_MAX_CONNECTIONS", "ORDO_QUERY_DB_CONNECTIONS"]));
        assert_eq!(pool.var, "ORDO_QUERY_DB_CONNECTIONS");
        assert_eq!(pool.instead_of.as_deref(), Some("ORDO_QUERY_DB_MAX_CONNECTIONS"));
    }

    #[derive(Debug, clap::Parser)]
    struct Args {
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(flatten)]
        http: HttpArgs,
    }

    #[test]
    fn flags_get_their_variables_and_defaults_and_help_names_the_secrets_without_values() {
        let mut cmd = QUERY.command::<Args>(&[("addr", "127.0.0.1:8081")], |_| false);
        let help = cmd.render_long_help().to_string();
        assert!(help.contains("ORDO_QUERY_DB_MAX_CONNECTIONS"), "{help}");
        assert!(help.contains("ORDO_QUERY_ADDR"), "{help}");
        assert!(help.contains("127.0.0.1:8081"), "{help}");
        assert!(help.contains("ORDO_QUERY_DATABASE_URL or ORDO_DATABASE_URL"), "{help}");
        assert!(!help.contains("--database-url") && !help.contains("--jwt-secret"), "{help}");
        let args: Args = QUERY.try_parse_from(["query-api", "--db-max-connections=3"], &[]).unwrap();
        assert_eq!(args.database.max_connections, 3);
        assert!(!args.database.migrate);
        assert!(QUERY.try_parse_from::<Args, _, _>(["query-api", "--db-max-connections=0"], &[]).is_err());
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(<redacted>)");
    }
}
