//! Docker's container events, reduced to what the app needs to reconcile.

use bollard::models::EventMessage;

/// Container actions [`crate::DockerRuntime::events`] asks the daemon for.
pub const CONTAINER_ACTIONS: [&str; 9] =
    ["create", "start", "die", "stop", "pause", "unpause", "destroy", "oom", "rename"];

/// Something happened to a container (domain-free: a hint to reconcile,
/// not a state; call `inspect` or `list` for the truth).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerEvent {
    /// The container's Docker id.
    pub runtime_id: String,
    /// Docker's action word (one of [`CONTAINER_ACTIONS`]).
    pub action: String,
    /// The container's name (for `rename`, the new name), if Docker sent it.
    pub name: Option<String>,
}

/// A daemon event → a [`DockerEvent`]; `None` for events without a
/// container id or with an action we did not ask for.
pub(crate) fn from_message(msg: EventMessage) -> Option<DockerEvent> {
    let action = msg.action?;
    // Docker appends details to some actions ("exec_start: sh"); ours have none.
    let action = action.split(':').next().unwrap_or_default().trim().to_owned();
    if !CONTAINER_ACTIONS.contains(&action.as_str()) {
        return None;
    }
    let actor = msg.actor?;
    let runtime_id = actor.id.filter(|id| !id.is_empty())?;
    let name = actor.attributes.and_then(|mut a| a.remove("name"));
    Some(DockerEvent { runtime_id, action, name })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::EventActor;
    use std::collections::HashMap;

    fn msg(action: &str, id: Option<&str>) -> EventMessage {
        EventMessage {
            action: Some(action.into()),
            actor: Some(EventActor {
                id: id.map(str::to_owned),
                attributes: Some(HashMap::from([("name".into(), "web".into()), ("image".into(), "busybox".into())])),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn container_events_keep_id_action_and_name() {
        assert_eq!(
            from_message(msg("die", Some("abc"))),
            Some(DockerEvent { runtime_id: "abc".into(), action: "die".into(), name: Some("web".into()) })
        );
        assert_eq!(from_message(msg("exec_start: sh -c", Some("abc"))), None);
        assert_eq!(from_message(msg("start", None)), None);
    }
}
