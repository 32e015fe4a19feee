//! Configuration of the decision domain: cache TTLs by sensitivity and cache bounds.
//!
//! Defaults are SARK's documented TTLs; SARK's environment variables override them
//! (`POLICY_CACHE_TTL_LOW`, `_MEDIUM`, `_HIGH`, `_CRITICAL`, `_DEFAULT`).

use std::time::Duration;

use crate::decision::Sensitivity;
use crate::error::ConfigError;

/// The longest any decision may be cached, whatever the configuration says.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// Cache TTL per tool sensitivity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TtlConfig {
    pub low: Duration,
    pub medium: Duration,
    pub high: Duration,
    pub critical: Duration,
    /// For inputs whose sensitivity is absent or unknown.
    pub default: Duration,
}

impl Default for TtlConfig {
    fn default() -> Self {
        TtlConfig {
            low: Duration::from_secs(600),
            medium: Duration::from_secs(300),
            high: Duration::from_secs(60),
            critical: Duration::from_secs(30),
            default: Duration::from_secs(300),
        }
    }
}

impl TtlConfig {
    /// The TTL for a sensitivity.
    pub fn for_sensitivity(&self, s: Sensitivity) -> Duration {
        match s {
            Sensitivity::Low => self.low,
            Sensitivity::Medium => self.medium,
            Sensitivity::High => self.high,
            Sensitivity::Critical => self.critical,
            Sensitivity::Unknown => self.default,
        }
    }

    /// These TTLs overridden by SARK's `POLICY_CACHE_TTL_*` variables from `env`.
    ///
    /// # Errors
    /// A variable that is not a whole number of seconds, or a TTL over [`MAX_TTL`].
    pub fn with_env(self, env: impl Fn(&str) -> Option<String>) -> Result<TtlConfig, ConfigError> {
        let mut c = self;
        for (var, slot) in [
            ("POLICY_CACHE_TTL_LOW", &mut c.low),
            ("POLICY_CACHE_TTL_MEDIUM", &mut c.medium),
            ("POLICY_CACHE_TTL_HIGH", &mut c.high),
            ("POLICY_CACHE_TTL_CRITICAL", &mut c.critical),
            ("POLICY_CACHE_TTL_DEFAULT", &mut c.default),
        ] {
            if let Some(value) = env(var) {
                let secs: u64 = value.trim().parse().map_err(|_| ConfigError::BadEnv {
                    var: var.to_string(),
                    value: value.clone(),
                })?;
                *slot = Duration::from_secs(secs);
            }
        }
        c.validate()?;
        Ok(c)
    }

    /// # Errors
    /// A TTL over [`MAX_TTL`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, ttl) in [
            ("low", self.low),
            ("medium", self.medium),
            ("high", self.high),
            ("critical", self.critical),
            ("default", self.default),
        ] {
            if ttl > MAX_TTL {
                return Err(ConfigError::Invalid {
                    field: format!("cache ttl {field}"),
                    message: format!("{}s is over the maximum of {}s", ttl.as_secs(), MAX_TTL.as_secs()),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sark_variables_override_defaults() {
        let c = TtlConfig::default().with_env(|v| match v {
            "POLICY_CACHE_TTL_HIGH" => Some("15".into()),
            "POLICY_CACHE_TTL_DEFAULT" => Some(" 100 ".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.high, Duration::from_secs(15));
        assert_eq!(c.default, Duration::from_secs(100));
        assert_eq!(c.low, Duration::from_secs(600));
        assert_eq!(c.for_sensitivity(Sensitivity::Critical), Duration::from_secs(30));
    }

    #[test]
    fn bad_values_are_refused() {
        let err = TtlConfig::default().with_env(|v| (v == "POLICY_CACHE_TTL_LOW").then(|| "ten".to_string())).unwrap_err();
        assert_eq!(err.to_string(), "POLICY_CACHE_TTL_LOW=\"ten\": expected a whole number of seconds");
        let err = TtlConfig::default().with_env(|v| (v == "POLICY_CACHE_TTL_LOW").then(|| "-1".to_string())).unwrap_err();
        assert!(matches!(err, ConfigError::BadEnv { .. }));
        let err = TtlConfig::default().with_env(|v| (v == "POLICY_CACHE_TTL_LOW").then(|| "999999".to_string())).unwrap_err();
        assert!(matches!(err, ConfigError::Invalid { .. }));
    }
}
