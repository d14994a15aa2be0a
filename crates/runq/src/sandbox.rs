//! Kubernetes pods. The sandbox (the pause container) stays a plain runc container: it only
//! holds the pod's namespaces, and a VM for it would cost a boot. Each application container
//! is a VM that shares the pod's network namespace with the others (see runq-mirror).
//!
//! The annotation is only a claim: the engine sets it, but so could anyone who can hand runq
//! a spec. runc gets a sandbox only when it is one in fact: a process with no capability
//! beyond the engines' default set (a privileged sandbox has them all). Anything else is
//! refused rather than run without a VM.

use oci_spec::runtime::{Capability, Spec};
use thiserror::Error;

#[derive(Debug, Error)]
#[error(
    "a pod sandbox (annotation {annotation}) with {capability} is not a plain sandbox: runq \
     runs a sandbox without a VM only when it has no capability beyond the default set \
     (privileged sandboxes are refused)"
)]
pub struct SandboxError {
    annotation: &'static str,
    capability: String,
}

/// The capabilities containerd, CRI-O and Docker give a container by default.
const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Annotations by which CRI implementations mark the sandbox container: containerd's, then
/// CRI-O's.
const SANDBOX_ANNOTATIONS: [&str; 2] = [
    "io.kubernetes.cri.container-type",
    "io.kubernetes.cri-o.ContainerType",
];

/// Whether the spec is a pod's sandbox that runc may run as it is; an error for one that
/// claims to be a sandbox but has more privilege than one.
pub fn is_pod_sandbox(spec: &Spec) -> Result<bool, SandboxError> {
    let Some((annotation, "sandbox")) = container_type(spec) else {
        return Ok(false);
    };
    let caps = spec
        .process()
        .as_ref()
        .and_then(|p| p.capabilities().as_ref());
    for set in caps.into_iter().flat_map(|c| {
        [
            c.bounding(),
            c.effective(),
            c.permitted(),
            c.inheritable(),
            c.ambient(),
        ]
    }) {
        if let Some(extra) = set
            .iter()
            .flatten()
            .find(|cap| !DEFAULT_CAPABILITIES.contains(cap))
        {
            return Err(SandboxError {
                annotation,
                capability: format!("CAP_{extra}"),
            });
        }
    }
    Ok(true)
}

/// An application container of a pod: its network namespace is the pod's, held by the
/// sandbox, named by the sandbox's process (`/proc/PID/ns/net`) and shared with the pod's
/// other containers.
pub fn is_pod_application(spec: &Spec) -> bool {
    matches!(container_type(spec), Some((_, "container")))
}

/// The CRI annotation that marks the container's role, and the role.
fn container_type(spec: &Spec) -> Option<(&'static str, &str)> {
    let annotations = spec.annotations().as_ref()?;
    SANDBOX_ANNOTATIONS
        .iter()
        .find_map(|key| annotations.get(*key).map(|value| (*key, value.as_str())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn spec_with(annotations: &[(&str, &str)]) -> Spec {
        let mut spec = Spec::default();
        spec.set_annotations(Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>(),
        ));
        spec
    }

    #[test]
    fn the_cri_sandbox_is_recognised_by_containerd_and_cri_o_annotations() {
        assert!(is_pod_sandbox(&spec_with(&[(
            "io.kubernetes.cri.container-type",
            "sandbox"
        )]))
        .unwrap());
        assert!(is_pod_sandbox(&spec_with(&[(
            "io.kubernetes.cri-o.ContainerType",
            "sandbox"
        )]))
        .unwrap());
    }

    #[test]
    fn a_sandbox_with_added_capabilities_is_refused() {
        let mut spec = spec_with(&[("io.kubernetes.cri.container-type", "sandbox")]);
        let mut process = oci_spec::runtime::Process::default();
        let mut caps = process.capabilities().clone().unwrap_or_default();
        let mut bounding = caps.bounding().clone().unwrap_or_default();
        bounding.insert(Capability::Kill);
        caps.set_bounding(Some(bounding.clone()));
        process.set_capabilities(Some(caps.clone()));
        spec.set_process(Some(process.clone()));
        assert!(is_pod_sandbox(&spec).unwrap(), "default capabilities");
        bounding.insert(Capability::SysAdmin);
        caps.set_bounding(Some(bounding));
        process.set_capabilities(Some(caps));
        spec.set_process(Some(process));
        let error = is_pod_sandbox(&spec).unwrap_err().to_string();
        assert!(error.contains("CAP_SYS_ADMIN"), "{error}");
        assert!(
            error.contains("io.kubernetes.cri.container-type"),
            "{error}"
        );
    }

    #[test]
    fn application_containers_and_plain_ones_are_not_sandboxes() {
        let application = spec_with(&[("io.kubernetes.cri.container-type", "container")]);
        assert!(!is_pod_sandbox(&application).unwrap());
        assert!(is_pod_application(&application));
        assert!(is_pod_application(&spec_with(&[(
            "io.kubernetes.cri-o.ContainerType",
            "container"
        )])));
        assert!(!is_pod_sandbox(&spec_with(&[])).unwrap());
        assert!(!is_pod_application(&spec_with(&[])));
        assert!(!is_pod_sandbox(&Spec::default()).unwrap());
    }
}
