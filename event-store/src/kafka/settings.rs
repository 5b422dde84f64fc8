//! Kafka settings an operator gives through the environment: librdkafka client properties
//! (TLS, SASL, timeouts) and how topics Ordo creates are replicated.
//!
//! - Every variable `ORDO_KAFKA_<NAME>` becomes the librdkafka property `<name>` lowercased with
//!   `_` read as `.`: `ORDO_KAFKA_SECURITY_PROTOCOL=SASL_SSL` sets `security.protocol`. No
//!   string property of librdkafka has an underscore in its name. Blank values are ignored.
//!   `ORDO_KAFKA_BROKERS` is Ordo's own setting (the bootstrap servers), not a property.
//! - Properties on which Ordo's guarantees rest, or that have an Ordo setting of their own, are
//!   [`RESERVED`]: naming one is refused at start, as is a property librdkafka does not know.
//! - Values of secret properties (passwords, private keys, OAuth client secrets) never appear in
//!   `Debug` output, logs or error messages.
//! - `ORDO_TOPIC_REPLICATION_FACTOR` and `ORDO_TOPIC_MIN_INSYNC_REPLICAS` shape the topics Ordo
//!   creates ([`TopicSettings`]); existing topics are left as they are.

use rdkafka::config::ClientConfig;

/// Prefix of the environment variables passed to librdkafka as client properties.
pub const PROPERTY_PREFIX: &str = "ORDO_KAFKA_";

/// `ORDO_KAFKA_<NAME>` variables that are Ordo's own settings, not librdkafka properties:
/// `ORDO_KAFKA_BROKERS` (the bootstrap servers of every process, see `ordo_service::config`).
pub const OWN_SETTINGS: &[&str] = &["BROKERS"];

/// Properties the environment may not set, with the reason given when it tries.
pub const RESERVED: &[(&str, &str)] = &[
    ("bootstrap.servers", "set ORDO_KAFKA_BROKERS instead"),
    ("metadata.broker.list", "set ORDO_KAFKA_BROKERS instead"),
    ("enable.idempotence", "the relay's producer must stay idempotent"),
    ("acks", "the relay needs acks=all"),
    ("request.required.acks", "the relay needs acks=all"),
    ("max.in.flight.requests.per.connection", "the relay keeps at most 5 in flight to preserve order"),
    ("max.in.flight", "the relay keeps at most 5 in flight to preserve order"),
    ("message.timeout.ms", "set ORDO_RELAY_DELIVERY_TIMEOUT_MS instead"),
    ("delivery.timeout.ms", "set ORDO_RELAY_DELIVERY_TIMEOUT_MS instead"),
    ("transactional.id", "Ordo does not use Kafka transactions"),
    ("group.id", "set the process's consumer group setting instead"),
    ("enable.auto.commit", "consumers commit only handled messages"),
    ("auto.commit.enable", "consumers commit only handled messages"),
    ("enable.auto.offset.store", "consumers commit only handled messages"),
    ("auto.offset.reset", "a new consumer group must start from the earliest event"),
];

/// Why the Kafka settings in the environment are unusable.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{var} names no property (expected {PROPERTY_PREFIX}<PROPERTY>, e.g. {PROPERTY_PREFIX}SECURITY_PROTOCOL)")]
    Empty { var: String },
    #[error("{var} sets {property}, which Ordo sets itself: {reason}")]
    Reserved { var: String, property: String, reason: &'static str },
    #[error("{var} is refused by librdkafka: {message}")]
    Refused { var: String, message: String },
    #[error("{var} must be {expected}, got {value:?}")]
    Invalid { var: &'static str, expected: &'static str, value: String },
    #[error("ORDO_TOPIC_MIN_INSYNC_REPLICAS ({min_insync}) exceeds ORDO_TOPIC_REPLICATION_FACTOR ({replication})")]
    MinInsyncAboveReplication { min_insync: i32, replication: i32 },
}

/// One property taken from the environment.
#[derive(Clone, PartialEq, Eq)]
struct Property {
    var: String,
    name: String,
    value: String,
}

/// librdkafka properties from `ORDO_KAFKA_*` variables. `Debug` redacts secret values.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ClientProperties {
    properties: Vec<Property>,
}

impl std::fmt::Debug for ClientProperties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.described()).finish()
    }
}

impl ClientProperties {
    /// The properties in this process's environment.
    ///
    /// # Errors
    /// [`SettingsError`] naming the first unusable variable.
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_vars(std::env::vars())
    }

    /// The properties among `vars` (name, value pairs); other variables are ignored.
    ///
    /// # Errors
    /// [`SettingsError`] for a reserved property, a bare prefix, or a property librdkafka refuses
    /// (unknown, or a value it cannot take, such as a protocol it was built without).
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, SettingsError> {
        let mut properties = Vec::new();
        for (var, value) in vars {
            let Some(suffix) = var.strip_prefix(PROPERTY_PREFIX) else { continue };
            if OWN_SETTINGS.contains(&suffix) || value.trim().is_empty() {
                continue;
            }
            if suffix.is_empty() {
                return Err(SettingsError::Empty { var });
            }
            let name = suffix.to_ascii_lowercase().replace('_', ".");
            if let Some((_, reason)) = RESERVED.iter().find(|(p, _)| *p == name) {
                return Err(SettingsError::Reserved { var, property: name, reason });
            }
            let property = Property { var, name, value: value.trim().to_owned() };
            property.check()?;
            properties.push(property);
        }
        properties.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Self { properties })
    }

    /// Whether no property was given.
    pub fn is_empty(&self) -> bool {
        self.properties.is_empty()
    }

    /// The value given for `name`, if any.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.properties.iter().find(|p| p.name == name).map(|p| p.value.as_str())
    }

    /// Sets every property on `config`, over what was there.
    pub fn apply(&self, config: &mut ClientConfig) {
        for p in &self.properties {
            config.set(&p.name, &p.value);
        }
    }

    /// Property names with their values, secret ones as `<redacted>`, for logs.
    pub fn described(&self) -> Vec<(String, String)> {
        self.properties
            .iter()
            .map(|p| {
                let value = if is_secret(&p.name) { "<redacted>".to_owned() } else { p.value.clone() };
                (p.name.clone(), value)
            })
            .collect()
    }
}

impl Property {
    /// Lets librdkafka judge the name and value without creating a client.
    fn check(&self) -> Result<(), SettingsError> {
        let mut config = ClientConfig::new();
        config.set(&self.name, &self.value);
        config.create_native_config().map(|_| ()).map_err(|e| {
            let mut message = e.to_string();
            if is_secret(&self.name) {
                message = message.replace(&self.value, "<redacted>");
            }
            SettingsError::Refused { var: self.var.clone(), message }
        })
    }
}

/// Whether a property's value is a secret (never logged).
pub fn is_secret(name: &str) -> bool {
    ["password", "secret", "key.pem", "oauthbearer.config", "jaas", "ssl.keystore"].iter().any(|s| name.contains(s))
}

/// How the topics Ordo creates are replicated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicSettings {
    /// Copies of each partition; `-1` leaves it to the broker's `default.replication.factor`.
    pub replication_factor: i32,
    /// `min.insync.replicas` of each created topic; `None` leaves the broker's default.
    pub min_insync_replicas: Option<i32>,
}

impl Default for TopicSettings {
    fn default() -> Self {
        Self { replication_factor: -1, min_insync_replicas: None }
    }
}

impl TopicSettings {
    /// `ORDO_TOPIC_REPLICATION_FACTOR` (default `-1`: the broker's `default.replication.factor`) and
    /// `ORDO_TOPIC_MIN_INSYNC_REPLICAS` (default: the broker's).
    ///
    /// # Errors
    /// [`SettingsError`] for a value that is not a count, or a minimum above the factor.
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_values(
            std::env::var("ORDO_TOPIC_REPLICATION_FACTOR").ok().as_deref(),
            std::env::var("ORDO_TOPIC_MIN_INSYNC_REPLICAS").ok().as_deref(),
        )
    }

    /// Settings from the two variables' values (`None` or blank: unset).
    ///
    /// # Errors
    /// As [`TopicSettings::from_env`].
    pub fn from_values(replication: Option<&str>, min_insync: Option<&str>) -> Result<Self, SettingsError> {
        let mut settings = Self::default();
        if let Some(v) = replication.map(str::trim).filter(|v| !v.is_empty()) {
            settings.replication_factor = match v.parse::<i32>() {
                Ok(n) if n >= 1 || n == -1 => n,
                _ => {
                    return Err(SettingsError::Invalid {
                        var: "ORDO_TOPIC_REPLICATION_FACTOR",
                        expected: "a count of at least 1, or -1 for the broker's default",
                        value: v.to_owned(),
                    })
                }
            };
        }
        if let Some(v) = min_insync.map(str::trim).filter(|v| !v.is_empty()) {
            let n = v.parse::<i32>().ok().filter(|n| *n >= 1).ok_or_else(|| SettingsError::Invalid {
                var: "ORDO_TOPIC_MIN_INSYNC_REPLICAS",
                expected: "a count of at least 1",
                value: v.to_owned(),
            })?;
            if settings.replication_factor >= 1 && n > settings.replication_factor {
                return Err(SettingsError::MinInsyncAboveReplication {
                    min_insync: n,
                    replication: settings.replication_factor,
                });
            }
            settings.min_insync_replicas = Some(n);
        }
        Ok(settings)
    }
}

/// Checks the Kafka settings in the environment and logs the properties taken from it (secret
/// values redacted). Call once at start so a mistake stops the process with a clear error
/// instead of a client that retries forever.
///
/// # Errors
/// [`SettingsError`] naming the first unusable variable.
pub fn check_environment() -> Result<(), SettingsError> {
    let properties = ClientProperties::from_env()?;
    let topics = TopicSettings::from_env()?;
    if !properties.is_empty() {
        tracing::info!(properties = ?properties, "kafka client properties from the environment");
    }
    tracing::debug!(replication_factor = topics.replication_factor, min_insync_replicas = ?topics.min_insync_replicas,
        "kafka topic settings");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn prefixed_variables_become_dotted_lowercase_properties_and_others_are_ignored() {
        let p = ClientProperties::from_vars(vars(&[
            ("ORDO_KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
            ("ORDO_KAFKA_SASL_MECHANISMS", "SCRAM-SHA-512"),
            ("ORDO_KAFKA_CLIENT_ID", " ordo-test "),
            ("ORDO_KAFKA_SOCKET_KEEPALIVE_ENABLE", "  "),
            ("KAFKA_BROKERS", "b:9092"),
            ("ORDO_KAFKA_BROKERS", "b:9092"),
            ("ORDO_RELAY_NAME", "x"),
        ]))
        .unwrap();
        assert_eq!(p.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(p.get("sasl.mechanisms"), Some("SCRAM-SHA-512"));
        assert_eq!(p.get("client.id"), Some("ordo-test"));
        assert_eq!(p.get("socket.keepalive.enable"), None, "a blank value is ignored");
        assert_eq!(p.described().len(), 3, "ORDO_KAFKA_BROKERS is Ordo's setting, not a property");
    }

    #[test]
    fn tls_and_every_sasl_mechanism_ordo_documents_are_built_in() {
        for (name, value) in [
            ("ORDO_KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
            ("ORDO_KAFKA_SECURITY_PROTOCOL", "SSL"),
            ("ORDO_KAFKA_SASL_MECHANISMS", "PLAIN"),
            ("ORDO_KAFKA_SASL_MECHANISMS", "SCRAM-SHA-256"),
            ("ORDO_KAFKA_SASL_MECHANISMS", "SCRAM-SHA-512"),
            ("ORDO_KAFKA_SSL_CA_LOCATION", "probe"),
        ] {
            ClientProperties::from_vars(vars(&[(name, value)])).unwrap_or_else(|e| panic!("{name}={value}: {e}"));
        }
    }

    #[test]
    fn unknown_reserved_and_malformed_properties_are_refused_naming_the_variable() {
        let unknown = ClientProperties::from_vars(vars(&[("ORDO_KAFKA_NO_SUCH_THING", "1")])).unwrap_err();
        assert!(matches!(&unknown, SettingsError::Refused { var, .. } if var == "ORDO_KAFKA_NO_SUCH_THING"));
        assert!(unknown.to_string().contains("no.such.thing"), "{unknown}");
        let reserved = ClientProperties::from_vars(vars(&[("ORDO_KAFKA_ENABLE_IDEMPOTENCE", "false")])).unwrap_err();
        assert!(matches!(reserved, SettingsError::Reserved { .. }), "{reserved}");
        let brokers = ClientProperties::from_vars(vars(&[("ORDO_KAFKA_BOOTSTRAP_SERVERS", "x:1")])).unwrap_err();
        assert!(brokers.to_string().contains("KAFKA_BROKERS"), "{brokers}");
        let value =
            ClientProperties::from_vars(vars(&[("ORDO_KAFKA_SECURITY_PROTOCOL", "carrier_pigeon")])).unwrap_err();
        assert!(matches!(value, SettingsError::Refused { .. }), "{value}");
        assert!(ClientProperties::from_vars(vars(&[("ORDO_KAFKA_", "x")])).is_err());
    }

    #[test]
    fn secret_values_never_show_in_debug_output() {
        let p = ClientProperties::from_vars(vars(&[
            ("ORDO_KAFKA_SASL_USERNAME", "ordo"),
            ("ORDO_KAFKA_SASL_PASSWORD", "hunter2-very-secret"),
            ("ORDO_KAFKA_SSL_KEY_PASSWORD", "key-secret-value"),
        ]))
        .unwrap();
        let shown = format!("{p:?}");
        assert!(shown.contains("ordo") && shown.contains("sasl.password"), "{shown}");
        assert!(!shown.contains("hunter2") && !shown.contains("key-secret-value"), "{shown}");
    }

    #[test]
    fn topic_settings_default_to_the_brokers_and_refuse_impossible_minimums() {
        assert_eq!(TopicSettings::from_values(None, None).unwrap(), TopicSettings::default());
        assert_eq!(TopicSettings::default().replication_factor, -1);
        let s = TopicSettings::from_values(Some("3"), Some("2")).unwrap();
        assert_eq!((s.replication_factor, s.min_insync_replicas), (3, Some(2)));
        assert_eq!(TopicSettings::from_values(Some("-1"), Some("2")).unwrap().min_insync_replicas, Some(2));
        assert!(TopicSettings::from_values(Some("3"), Some("4")).is_err());
        assert!(TopicSettings::from_values(Some("0"), None).is_err());
        assert!(TopicSettings::from_values(Some("three"), None).is_err());
        assert!(TopicSettings::from_values(None, Some("0")).is_err());
    }
}
