//! A volume's [`Health`]: current, not refreshed (rotation failed), or holding a user
//! certificate that expires soon or has expired.

use std::fmt;

use time::OffsetDateTime;

use crate::rotation::Problem;

/// A certificate from a non-system source expiring within this window marks the volume abnormal,
/// early enough for someone to rotate it before clients start failing.
const EXPIRY_WARNING_SECONDS: i64 = 7 * 24 * 3600;

#[derive(Clone, Debug)]
pub enum Health {
    Current,
    /// The bundle could not be refreshed; the volume keeps its previous certificates.
    NotRefreshed(Problem),
    /// A user certificate expires within the warning window, or has expired (`not_after <= now`).
    Expiring {
        subject: String,
        not_after: i64,
        now: i64,
    },
}

impl Health {
    /// A refresh problem first (the volume is stale), else the earliest user expiry if it falls
    /// within the warning window.
    pub fn of(problem: Option<Problem>, earliest_user_expiry: Option<(String, i64)>, now: i64) -> Self {
        if let Some(problem) = problem {
            return Self::NotRefreshed(problem);
        }
        match earliest_user_expiry {
            Some((subject, not_after)) if not_after - now <= EXPIRY_WARNING_SECONDS => {
                Self::Expiring { subject, not_after, now }
            }
            _ => Self::Current,
        }
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
            Self::Expiring { subject, not_after, now } => {
                let when = OffsetDateTime::from_unix_timestamp(*not_after)
                    .ok()
                    .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
                    .unwrap_or_else(|| not_after.to_string());
                if not_after <= now {
                    write!(
                        f,
                        "certificate {subject:?} expired at {when}; volumes leave it out unless the volume attribute expired is \"keep\"; replace it in its source"
                    )
                } else {
                    let days = (not_after - now) / 86_400;
                    write!(f, "certificate {subject:?} expires at {when} (in {days} days); rotate it in its source")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::sources;

    const NOW: i64 = 1_735_689_600;
    const DAY: i64 = 86_400;

    #[test]
    fn an_expiry_counts_only_within_seven_days_and_a_refresh_problem_comes_first() {
        let soon = Some(("CN=Org CA".to_owned(), NOW + 3 * DAY));
        assert!(matches!(Health::of(None, Some(("CN=Org CA".to_owned(), NOW + 30 * DAY)), NOW), Health::Current));
        assert!(matches!(Health::of(None, None, NOW), Health::Current));
        let expiring = Health::of(None, soon.clone(), NOW);
        assert!(matches!(&expiring, Health::Expiring { not_after, .. } if *not_after == NOW + 3 * DAY));
        assert!(expiring.to_string().contains("(in 3 days)"), "{expiring}");
        let problem = Problem::Reload(Arc::new(sources::Error::EmptyBundle));
        assert!(matches!(Health::of(Some(problem), soon, NOW), Health::NotRefreshed(Problem::Reload(_))));
    }

    #[test]
    fn an_expired_certificate_says_so() {
        let health = Health::of(None, Some(("CN=Old".to_owned(), NOW - DAY)), NOW);
        assert!(health.is_abnormal());
        assert!(health.to_string().contains("expired at"), "{health}");
    }
}
