//! API errors as a person reads them in a pod's events: the API server's own code, reason and
//! message (a 403 names the user and the verb it lacks), else the error with its causes (a
//! refused connection says so), never the Debug dump kube's `Display` appends.

use kube::runtime::watcher;

/// One watch error.
pub fn describe_watch(error: &watcher::Error) -> String {
    match error {
        watcher::Error::InitialListFailed(error)
        | watcher::Error::WatchStartFailed(error)
        | watcher::Error::WatchFailed(error) => describe(error),
        watcher::Error::WatchError(status) => describe_status(status),
        other => with_causes(other),
    }
}

/// The HTTP code the API server answered a watch with, when the error is its answer.
pub fn watch_code(error: &watcher::Error) -> Option<u16> {
    match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => Some(status.code),
        watcher::Error::WatchError(status) => Some(status.code),
        _ => None,
    }
}

/// One request error.
pub fn describe(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => describe_status(status),
        other => with_causes(other),
    }
}

fn describe_status(status: &kube::core::Status) -> String {
    format!("the API server answered {} {}: {}", status.code, status.reason, status.message)
}

/// The error, then each cause it does not already spell out.
fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        let said = next.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = next.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_api_answer_is_its_code_reason_and_message_and_a_transport_error_keeps_its_causes() {
        let status = kube::core::Status::failure("configmaps \"a\" is forbidden", "Forbidden").with_code(403);
        let error = watcher::Error::InitialListFailed(kube::Error::Api(Box::new(status)));
        assert_eq!(describe_watch(&error), "the API server answered 403 Forbidden: configmaps \"a\" is forbidden");
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let error = kube::Error::Service(Box::new(refused));
        assert!(describe(&error).contains("connection refused"), "{}", describe(&error));
    }
}
