//! A volume's report ([`Node::stats`]): its usage and its [`Health`], current, not refreshed
//! (rotation failed), or holding a user certificate that expires soon or has expired (by the
//! node's clock).

use std::fmt;
use std::path::Path;

use time::OffsetDateTime;

use super::Result;
use super::failures::Problem;
use super::publish::Node;
use crate::sources::Expiry;
use crate::volume::VolumeStats;

/// A certificate from a non-system source expiring within this window marks the volume abnormal,
/// early enough for someone to rotate it before clients start failing.
const EXPIRY_WARNING_SECONDS: i64 = 7 * 24 * 3600;

/// What NodeGetVolumeStats answers: usage and health.
#[derive(Debug)]
pub struct VolumeReport {
    pub stats: VolumeStats,
    pub health: Health,
}

impl Node {
    /// # Errors
    /// `NotPublished` when `volume_id` is not published at `path`.
    pub async fn stats(&self, volume_id: &str, path: &Path) -> Result<VolumeReport> {
        let stats = self.store.stats(volume_id, path).await?;
        let now = self.clock.unix_seconds();
        let health =
            Health::of(self.rotation.problem(&stats.digest), self.sources.user_expiries_at(&stats.spec, now), now);
        Ok(VolumeReport { stats, health })
    }
}

#[derive(Clone, Debug)]
pub enum Health {
    Current,
    /// The bundle could not be refreshed; the volume keeps its previous certificates.
    NotRefreshed(Problem),
    /// Certificates of user sources (`--extra-pem`, ConfigMaps, ClusterTrustBundles, Secrets)
    /// that expire within the warning window or have expired (`not_after <= now`): the earliest
    /// of each such source, soonest first.
    Expiring {
        expiries: Vec<Expiry>,
        now: i64,
    },
}

impl Health {
    /// A refresh problem first (the volume is stale), else every user source whose earliest
    /// expiry falls within the warning window.
    pub fn of(problem: Option<Problem>, user_expiries: Vec<Expiry>, now: i64) -> Self {
        if let Some(problem) = problem {
            return Self::NotRefreshed(problem);
        }
        let expiries: Vec<Expiry> =
            user_expiries.into_iter().filter(|e| e.not_after - now <= EXPIRY_WARNING_SECONDS).collect();
        if expiries.is_empty() { Self::Current } else { Self::Expiring { expiries, now } }
    }

    pub fn is_abnormal(&self) -> bool {
        !matches!(self, Self::Current)
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Current => f.write_str("trust bundle is current"),
            Self::NotRefreshed(problem) => write!(f, "{problem}"),
            Self::Expiring { expiries, now } => {
                for (i, Expiry { subject, source, not_after }) in expiries.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    let when = OffsetDateTime::from_unix_timestamp(*not_after)
                        .ok()
                        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
                        .unwrap_or_else(|| not_after.to_string());
                    let source = source.describe();
                    if not_after <= now {
                        write!(
                            f,
                            "certificate {subject:?} of {source} expired at {when}; volumes leave it out unless the volume attribute expired is \"keep\"; replace it there"
                        )?;
                    } else {
                        let days = (not_after - now) / 86_400;
                        write!(
                            f,
                            "certificate {subject:?} of {source} expires at {when} (in {days} days); rotate it there"
                        )?;
                    }
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::bundle::{KindName, ObjectOrigin, Provenance, Scope};
    use crate::sources;

    const NOW: i64 = 1_735_689_600;
    const DAY: i64 = 86_400;

    fn expiry(source: Provenance, not_after: i64) -> Expiry {
        Expiry { subject: "CN=Org CA".to_owned(), source, not_after }
    }

    fn file() -> Provenance {
        Provenance::File("/ca.pem".into())
    }

    fn object(tag: &'static str, title: &'static str, scope: Scope, key: Option<&str>) -> Provenance {
        let kind = KindName { tag, title };
        Provenance::Object(ObjectOrigin { kind, scope, name: "ca".to_owned(), key: key.map(str::to_owned) })
    }

    #[test]
    fn an_expiry_counts_only_within_seven_days_and_a_refresh_problem_comes_first() {
        let soon = vec![expiry(file(), NOW + 3 * DAY)];
        assert!(matches!(Health::of(None, vec![expiry(file(), NOW + 30 * DAY)], NOW), Health::Current));
        assert!(matches!(Health::of(None, Vec::new(), NOW), Health::Current));
        let expiring = Health::of(None, soon.clone(), NOW);
        assert!(matches!(&expiring, Health::Expiring { expiries, .. } if expiries[0].not_after == NOW + 3 * DAY));
        assert!(expiring.to_string().contains("(in 3 days)"), "{expiring}");
        assert!(expiring.to_string().contains("--extra-pem /ca.pem"), "{expiring}");
        let problem = Problem::Reload(Arc::new(sources::Error::EmptyBundle));
        assert!(matches!(Health::of(Some(problem), soon, NOW), Health::NotRefreshed(Problem::Reload(_))));
    }

    #[test]
    fn an_expired_certificate_says_so() {
        let health = Health::of(None, vec![expiry(Provenance::Named("test".to_owned()), NOW - DAY)], NOW);
        assert!(health.is_abnormal());
        assert!(health.to_string().contains("expired at"), "{health}");
    }

    #[test]
    fn each_expiring_source_is_named_and_a_distant_one_is_not() {
        let health = Health::of(
            None,
            vec![
                expiry(object("configmap", "ConfigMap", Scope::Namespace("ns".into()), Some("ca.crt")), NOW + 2 * DAY),
                expiry(object("clustertrustbundle", "ClusterTrustBundle", Scope::Cluster, None), NOW + 5 * DAY),
                expiry(object("secret", "Secret", Scope::Namespace("ns".into()), Some("ca.crt")), NOW + 90 * DAY),
            ],
            NOW,
        );
        let text = health.to_string();
        assert!(text.contains("of ConfigMap ns/ca key ca.crt expires at"), "{text}");
        assert!(text.contains("; certificate \"CN=Org CA\" of ClusterTrustBundle ca expires at"), "{text}");
        assert!(!text.contains("Secret"), "{text}");
    }
}
