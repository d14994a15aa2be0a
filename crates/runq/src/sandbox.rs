//! Kubernetes pods. The sandbox (the pause container) stays a plain runc container: it only
//! holds the pod's namespaces, and a VM for it would cost a boot. Each application container
//! is a VM that shares the pod's network namespace with the others (see runq-mirror).

use oci_spec::runtime::Spec;

/// Annotations by which CRI implementations mark the sandbox container: containerd's, then
/// CRI-O's.
const SANDBOX_ANNOTATIONS: [&str; 2] = [
    "io.kubernetes.cri.container-type",
    "io.kubernetes.cri-o.ContainerType",
];

pub fn is_pod_sandbox(spec: &Spec) -> bool {
    container_type(spec) == Some("sandbox")
}

/// An application container of a pod: its network namespace is the pod's, held by the
/// sandbox, named by the sandbox's process (`/proc/PID/ns/net`) and shared with the pod's
/// other containers.
pub fn is_pod_application(spec: &Spec) -> bool {
    container_type(spec) == Some("container")
}

fn container_type(spec: &Spec) -> Option<&str> {
    let annotations = spec.annotations().as_ref()?;
    SANDBOX_ANNOTATIONS
        .iter()
        .find_map(|key| annotations.get(*key))
        .map(String::as_str)
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
        )])));
        assert!(is_pod_sandbox(&spec_with(&[(
            "io.kubernetes.cri-o.ContainerType",
            "sandbox"
        )])));
    }

    #[test]
    fn application_containers_and_plain_ones_are_not_sandboxes() {
        let application = spec_with(&[("io.kubernetes.cri.container-type", "container")]);
        assert!(!is_pod_sandbox(&application));
        assert!(is_pod_application(&application));
        assert!(is_pod_application(&spec_with(&[(
            "io.kubernetes.cri-o.ContainerType",
            "container"
        )])));
        assert!(!is_pod_sandbox(&spec_with(&[])));
        assert!(!is_pod_application(&spec_with(&[])));
        assert!(!is_pod_sandbox(&Spec::default()));
    }
}
