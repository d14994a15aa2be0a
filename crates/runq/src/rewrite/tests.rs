use super::*;
use oci_spec::runtime::{
    LinuxBuilder, LinuxCpuBuilder, LinuxMemoryBuilder, LinuxResourcesBuilder, LinuxSeccompBuilder,
    ProcessBuilder, SpecBuilder,
};
use runq_shared::config::{DeviceKind, GuestDevice};

fn host(accel: Accel) -> HostFacts {
    HostFacts {
        assets_dir: PathBuf::from("/var/lib/runq/qemu"),
        accel,
        tun: true,
        macvtap_major: Some(246),
        rlimits: vec![
            Rlimit {
                kind: "RLIMIT_NOFILE".into(),
                soft: 20000,
                hard: 20000,
            },
            Rlimit {
                kind: "RLIMIT_NPROC".into(),
                soft: 5000,
                hard: 6000,
            },
        ],
        node_dir: PathBuf::from("/var/lib/runq/nodes"),
    }
}

/// runc's default spec (what `runc spec` writes), with an application process.
fn docker_like(env: &[&str]) -> Spec {
    let mut spec = Spec::default();
    let mut process = spec.process().clone().unwrap();
    process.set_args(Some(strings(&["sh", "-c", "echo hi"])));
    let mut all_env = strings(&["PATH=/bin", "SECRET=hunter2"]);
    all_env.extend(strings(env));
    process.set_env(Some(all_env));
    process.set_no_new_privileges(Some(true));
    spec.set_process(Some(process));
    let mut mounts = spec.mounts().clone().unwrap();
    mounts.push(
        MountBuilder::default()
            .destination("/etc/hosts")
            .typ("bind")
            .source("/var/lib/docker/containers/x/hosts")
            .options(strings(&["rbind", "rprivate"]))
            .build()
            .unwrap(),
    );
    mounts.push(
        MountBuilder::default()
            .destination("/dev/shm")
            .typ("bind")
            .source("/var/lib/docker/containers/x/mounts/shm")
            .options(strings(&["rbind", "rprivate"]))
            .build()
            .unwrap(),
    );
    spec.set_mounts(Some(mounts));
    let mut linux = spec.linux().clone().unwrap();
    linux.set_seccomp(Some(LinuxSeccompBuilder::default().build().unwrap()));
    spec.set_linux(Some(linux));
    spec.set_hostname(Some("abc123".into()));
    spec
}

fn rewrite_default(spec: &Spec) -> Rewritten {
    rewrite(spec, &RunqOptions::default(), &host(Accel::Tcg)).unwrap()
}

#[test]
fn the_proxy_becomes_the_process_and_the_application_moves_to_the_vm_config() {
    let spec = docker_like(&[]);
    let out = rewrite_default(&spec);
    let proxy = out.spec.process().as_ref().unwrap();
    assert_eq!(
        proxy.args().as_ref().unwrap(),
        &vec!["/.runq/qemu/proxy".to_string()]
    );
    assert_eq!(proxy.user().uid(), 0);
    assert!(proxy.rlimits().is_none(), "rlimits belong to the guest");
    assert_eq!(
        proxy.no_new_privileges(),
        Some(true),
        "the host side never gains privileges through exec"
    );
    let host_json = serde_json::to_string(&out.spec).unwrap();
    assert!(
        !host_json.contains("hunter2"),
        "the application's env must not be in the host spec"
    );

    let app = &out.vm.guest.process;
    assert_eq!(app.args, strings(&["sh", "-c", "echo hi"]));
    assert!(app.env.contains(&"SECRET=hunter2".to_string()));
    assert!(app.no_new_privileges);
    assert!(app.capabilities.bounding.contains(&"CAP_KILL".to_string()));
    assert!(app
        .rlimits
        .iter()
        .any(|r| r.kind == "RLIMIT_NOFILE" && r.soft == 1024));
    assert_eq!(out.vm.guest.hostname.as_deref(), Some("abc123"));
    assert!(out
        .vm
        .guest
        .masked_paths
        .contains(&"/proc/kcore".to_string()));
}

#[test]
fn runq_mounts_are_added_and_binds_stay_on_the_host() {
    let out = rewrite_default(&docker_like(&[]));
    let mounts = out.spec.mounts().as_ref().unwrap();
    let find = |dest: &str| {
        mounts
            .iter()
            .find(|m| m.destination() == Path::new(dest))
            .unwrap_or_else(|| panic!("no mount at {dest}"))
    };
    assert_eq!(find("/.runq").typ().as_deref(), Some("tmpfs"));
    let assets = find("/.runq/qemu");
    assert_eq!(
        assets.source().as_deref(),
        Some(Path::new("/var/lib/runq/qemu"))
    );
    assert!(assets
        .options()
        .as_ref()
        .unwrap()
        .contains(&"ro".to_string()));
    // The private directory reaches the proxy as descriptors, never as a mount.
    assert!(!mounts
        .iter()
        .any(|m| m.destination().starts_with("/.runq/config")));
    let modules = find("/lib/modules");
    assert_eq!(
        modules.source().as_deref(),
        Some(Path::new("/var/lib/runq/qemu/kernel/modules"))
    );
    assert!(modules
        .options()
        .as_ref()
        .unwrap()
        .contains(&"ro".to_string()));
    // The /.runq tmpfs must come before what is mounted inside it.
    let position = |dest: &str| {
        mounts
            .iter()
            .position(|m| m.destination() == Path::new(dest))
            .unwrap()
    };
    assert!(position("/.runq") < position("/.runq/qemu"));

    let guest = &out.vm.guest.mounts;
    assert!(guest
        .iter()
        .any(|m| m.destination == "/proc" && m.fstype == "proc"));
    assert!(guest.iter().all(|m| m.destination != "/etc/hosts"));
    let shm = guest.iter().find(|m| m.destination == "/dev/shm").unwrap();
    assert_eq!(shm.fstype, "tmpfs");
}

#[test]
fn host_side_security_moves_into_the_guest() {
    let out = rewrite_default(&docker_like(&[]));
    let linux = out.spec.linux().as_ref().unwrap();
    assert!(linux.seccomp().is_none());
    assert!(linux.readonly_paths().is_none());
    let devices = linux.devices().as_ref().unwrap();
    assert!(devices
        .iter()
        .any(|d| d.path() == Path::new("/dev/net/tun")));
    assert!(!devices.iter().any(|d| d.path() == Path::new("/dev/kvm")));
    let rules = linux
        .resources()
        .as_ref()
        .unwrap()
        .devices()
        .as_ref()
        .unwrap();
    assert!(rules
        .iter()
        .any(|r| r.allow() && r.major() == Some(10) && r.minor() == Some(200)));
}

#[test]
fn kvm_adds_its_device() {
    let out = rewrite(
        &docker_like(&[]),
        &RunqOptions::default(),
        &host(Accel::Kvm),
    )
    .unwrap();
    let devices = out
        .spec
        .linux()
        .as_ref()
        .unwrap()
        .devices()
        .clone()
        .unwrap();
    assert!(devices.iter().any(|d| d.path() == Path::new("/dev/kvm")));
    assert_eq!(out.vm.vm.accel, Accel::Kvm);
}

fn with_resources(spec: &mut Spec, memory_bytes: i64, quota: i64, period: u64) {
    let resources = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(memory_bytes)
                .swap(memory_bytes * 2)
                .build()
                .unwrap(),
        )
        .cpu(
            LinuxCpuBuilder::default()
                .quota(quota)
                .period(period)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let linux = LinuxBuilder::default()
        .resources(resources)
        .build()
        .unwrap();
    spec.set_linux(Some(linux));
}

#[test]
fn engine_limits_size_the_vm_and_the_cgroup_makes_room_for_qemu() {
    let mut spec = docker_like(&[]);
    with_resources(&mut spec, 512 << 20, 150_000, 100_000);
    let out = rewrite_default(&spec);
    assert_eq!(out.vm.vm.mem_mib, 512);
    assert_eq!(out.vm.vm.cpus, 2, "1.5 CPUs round up");
    let memory = out
        .spec
        .linux()
        .as_ref()
        .unwrap()
        .resources()
        .as_ref()
        .unwrap()
        .memory()
        .unwrap();
    assert_eq!(
        memory.limit(),
        Some(i64::from(512 + VMM_OVERHEAD_MIB) << 20)
    );
    assert_eq!(memory.swap(), Some(1024 << 20), "a larger swap limit stays");
}

#[test]
fn the_host_side_gets_a_pids_limit_where_the_operator_set_none() {
    let pids_limit = |spec: &Spec| {
        rewrite_default(spec)
            .spec
            .linux()
            .as_ref()
            .and_then(|linux| linux.resources().clone())
            .and_then(|resources| *resources.pids())
            .map(|pids| pids.limit())
    };
    let mut spec = docker_like(&[]);
    assert_eq!(pids_limit(&spec), Some(DEFAULT_PIDS_LIMIT));
    let mut linux = spec.linux().clone().unwrap_or_default();
    let mut resources = linux.resources().clone().unwrap_or_default();
    resources.set_pids(Some(
        LinuxPidsBuilder::default().limit(100).build().unwrap(),
    ));
    linux.set_resources(Some(resources));
    spec.set_linux(Some(linux));
    assert_eq!(pids_limit(&spec), Some(100), "the operator's limit stays");
}

#[test]
fn runq_variables_lower_engine_limits_and_flags() {
    let mut spec = docker_like(&["RUNQ_MEM=300", "RUNQ_CPU=3"]);
    with_resources(&mut spec, 512 << 20, 400_000, 100_000);
    let mut options = RunqOptions::default();
    options.set_flag("--mem", Some("1024")).unwrap();
    let out = rewrite(&spec, &options, &host(Accel::Tcg)).unwrap();
    assert_eq!(out.vm.vm.mem_mib, 300);
    assert_eq!(out.vm.vm.cpus, 3);
}

#[test]
fn runq_variables_never_raise_what_the_operator_set() {
    let refused = |env: &[&str], flags: &[(&str, &str)], limits: Option<(i64, i64)>| {
        let mut spec = docker_like(env);
        if let Some((memory, quota)) = limits {
            with_resources(&mut spec, memory, quota, 100_000);
        }
        let mut options = RunqOptions::default();
        for (flag, value) in flags {
            options.set_flag(flag, Some(value)).unwrap();
        }
        rewrite(&spec, &options, &host(Accel::Tcg))
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let error = refused(&["RUNQ_MEM=1048576"], &[], Some((512 << 20, 100_000))).unwrap_err();
    assert!(
        error.contains("RUNQ_MEM=1048576") && error.contains("512 MiB"),
        "{error}"
    );
    assert!(error.contains("docker -m"), "{error}");
    let error = refused(&["RUNQ_MEM=600"], &[("--mem", "512")], None).unwrap_err();
    assert!(error.contains("--mem"), "{error}");
    let error = refused(&["RUNQ_CPU=3"], &[], Some((1 << 30, 200_000))).unwrap_err();
    assert!(
        error.contains("RUNQ_CPU=3") && error.contains("2 vCPUs"),
        "{error}"
    );
    let error = refused(&["RUNQ_CPU=2"], &[("--cpu", "1")], None).unwrap_err();
    assert!(error.contains("--cpu"), "{error}");
    // Without an operator's setting there is nothing to raise.
    assert!(refused(&["RUNQ_MEM=2048", "RUNQ_CPU=4"], &[], None).is_ok());
    // The operator's own flag is no raise either.
    assert!(refused(&[], &[("--mem", "1024")], Some((512 << 20, 100_000))).is_ok());
}

#[test]
fn what_weakens_the_host_side_comes_only_from_the_operator() {
    let outcome = |env: &[&str], annotations: &[(&str, &str)]| {
        let mut spec = docker_like(env);
        spec.set_annotations(Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ));
        rewrite(&spec, &RunqOptions::default(), &host(Accel::Tcg)).map_err(|e| e.to_string())
    };
    let error = outcome(&["RUNQ_FS=9p"], &[]).unwrap_err();
    assert!(
        error.contains("RUNQ_FS=9p") && error.contains("run.runq.fs=9p") && error.contains("ENV"),
        "{error}"
    );
    let error = outcome(&["RUNQ_CPUARGS=host"], &[]).unwrap_err();
    assert!(
        error.contains("RUNQ_CPUARGS=host") && error.contains("run.runq.cpuargs=host"),
        "{error}"
    );
    let error = outcome(&["RUNQ_CPUARGS=host"], &[("run.runq.cpuargs", "qemu64")]).unwrap_err();
    assert!(error.contains("RUNQ_CPUARGS=host"), "{error}");

    let nine_p = outcome(&["RUNQ_9PCACHE=loose"], &[("run.runq.fs", "9p")]).unwrap();
    assert_eq!(
        nine_p.vm.vm.root_fs,
        RootFs::NineP {
            cache: runq_shared::config::NinePCache::Loose
        }
    );
    // Choosing the stronger file server, or repeating the operator's choice, is no raise.
    let virtiofs = outcome(&["RUNQ_FS=virtiofs"], &[("run.runq.fs", "9p")]).unwrap();
    assert_eq!(virtiofs.vm.vm.root_fs, RootFs::Virtiofs);
    let same = outcome(&["RUNQ_CPUARGS=qemu64"], &[("run.runq.cpuargs", "qemu64")]).unwrap();
    assert_eq!(same.vm.vm.cpu_model.as_deref(), Some("qemu64"));
    let error = outcome(&[], &[("run.runq.kernel", "/tmp/vmlinux")]).unwrap_err();
    assert!(
        error.contains("unknown runq annotation run.runq.kernel"),
        "{error}"
    );
}

#[test]
fn start_container_hooks_are_refused_and_the_others_kept() {
    use oci_spec::runtime::{HookBuilder, HooksBuilder};
    let hook = |path: &str| HookBuilder::default().path(path).build().unwrap();
    let mut spec = docker_like(&[]);
    spec.set_hooks(Some(
        HooksBuilder::default()
            .create_runtime(vec![hook("/usr/bin/engine-hook")])
            .build()
            .unwrap(),
    ));
    let out = rewrite_default(&spec);
    assert_eq!(
        out.spec
            .hooks()
            .as_ref()
            .unwrap()
            .create_runtime()
            .as_ref()
            .unwrap()[0]
            .path(),
        Path::new("/usr/bin/engine-hook")
    );
    spec.set_hooks(Some(
        HooksBuilder::default()
            .start_container(vec![hook("/bin/from-the-image")])
            .build()
            .unwrap(),
    ));
    let error = rewrite(&spec, &RunqOptions::default(), &host(Accel::Tcg))
        .unwrap_err()
        .to_string();
    assert!(error.contains("1 startContainer hook"), "{error}");
}

#[test]
fn defaults_without_limits() {
    let out = rewrite_default(&docker_like(&[]));
    assert_eq!(out.vm.vm.mem_mib, DEFAULT_MEM_MIB);
    assert_eq!(out.vm.vm.cpus, 1);
    assert_eq!(out.vm.vm.root_fs, RootFs::Virtiofs);
}

#[test]
fn invalid_variables_are_refused_by_name() {
    let err = rewrite(
        &docker_like(&["RUNQ_MEM=lots"]),
        &RunqOptions::default(),
        &host(Accel::Tcg),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("RUNQ_MEM") && err.contains("lots"), "{err}");
}

#[test]
fn a_spec_without_process_or_args_is_refused() {
    let mut spec = Spec::default();
    spec.set_process(None);
    assert!(matches!(
        rewrite(&spec, &RunqOptions::default(), &host(Accel::Tcg)),
        Err(RewriteError::NoProcess)
    ));
    let spec = SpecBuilder::default()
        .process(
            ProcessBuilder::default()
                .args(Vec::<String>::new())
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    assert!(matches!(
        rewrite(&spec, &RunqOptions::default(), &host(Accel::Tcg)),
        Err(RewriteError::NoArgs)
    ));
}

#[test]
fn custom_kernel_is_bound_in_and_named_in_the_vm_settings() {
    let mut options = RunqOptions::default();
    options.set_flag("--kernel", Some("/tmp/vmlinux")).unwrap();
    let out = rewrite(&docker_like(&[]), &options, &host(Accel::Tcg)).unwrap();
    // The proxy reads it in its own root, where the container's /.runq is /.
    assert_eq!(out.vm.vm.kernel.as_deref(), Some("/kernel"));
    assert!(out
        .spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .any(|m| m.destination() == Path::new("/.runq/kernel")
            && m.source().as_deref() == Some(Path::new("/tmp/vmlinux"))));
}

#[test]
fn a_cpuset_sizes_the_vm_when_nothing_else_does() {
    assert_eq!(count_cpus("0-2,5"), Some(4));
    assert_eq!(count_cpus("3"), Some(1));
    assert_eq!(count_cpus("2-1"), None);
    assert_eq!(count_cpus("x"), None);
    let mut spec = docker_like(&[]);
    let cpu = LinuxCpuBuilder::default().cpus("0-1").build().unwrap();
    let resources = LinuxResourcesBuilder::default().cpu(cpu).build().unwrap();
    spec.set_linux(Some(
        LinuxBuilder::default()
            .resources(resources)
            .build()
            .unwrap(),
    ));
    assert_eq!(rewrite_default(&spec).vm.vm.cpus, 2);
}

#[test]
fn runq_tmpfs_paths_are_mounted_unless_the_spec_has_them() {
    let mut options = RunqOptions::default();
    options.set_flag("--tmpfs", Some("/scratch,/tmp")).unwrap();
    let mut spec = docker_like(&[]);
    let mut mounts = spec.mounts().clone().unwrap();
    mounts.push(
        MountBuilder::default()
            .destination("/tmp")
            .typ("tmpfs")
            .source("tmpfs")
            .options(strings(&["size=1m"]))
            .build()
            .unwrap(),
    );
    spec.set_mounts(Some(mounts));
    let out = rewrite(&spec, &options, &host(Accel::Tcg)).unwrap();
    let guest = &out.vm.guest.mounts;
    assert_eq!(guest.iter().filter(|m| m.destination == "/tmp").count(), 1);
    let scratch = guest.iter().find(|m| m.destination == "/scratch").unwrap();
    assert_eq!(scratch.fstype, "tmpfs");
}

#[test]
fn limits_the_spec_leaves_out_are_the_runtimes_own() {
    let out = rewrite_default(&docker_like(&[]));
    let limits = &out.vm.guest.process.rlimits;
    // runc's default spec sets RLIMIT_NOFILE itself; that one stays.
    let nofile = limits.iter().find(|r| r.kind == "RLIMIT_NOFILE").unwrap();
    assert_eq!((nofile.soft, nofile.hard), (1024, 1024));
    let nproc = limits.iter().find(|r| r.kind == "RLIMIT_NPROC").unwrap();
    assert_eq!((nproc.soft, nproc.hard), (5000, 6000));
}

#[test]
fn the_hosts_network_and_another_containers_are_refused() {
    use oci_spec::runtime::{LinuxNamespaceBuilder, LinuxNamespaceType};
    let mut spec = docker_like(&[]);
    let mut linux = spec.linux().clone().unwrap();
    let without_network: Vec<_> = linux
        .namespaces()
        .clone()
        .unwrap()
        .into_iter()
        .filter(|ns| ns.typ() != LinuxNamespaceType::Network)
        .collect();
    linux.set_namespaces(Some(without_network.clone()));
    spec.set_linux(Some(linux.clone()));
    let err = rewrite(&spec, &RunqOptions::default(), &host(Accel::Tcg))
        .unwrap_err()
        .to_string();
    assert!(err.contains("--network host"), "{err}");

    // The host's namespace under another name: this process's, which runs in it.
    let hosts = format!("/proc/{}/ns/net", std::process::id());
    let mut joined = without_network;
    joined.push(
        LinuxNamespaceBuilder::default()
            .typ(LinuxNamespaceType::Network)
            .path(&hosts)
            .build()
            .unwrap(),
    );
    linux.set_namespaces(Some(joined));
    spec.set_linux(Some(linux));
    let err = rewrite(&spec, &RunqOptions::default(), &host(Accel::Tcg))
        .unwrap_err()
        .to_string();
    assert!(err.contains(&hosts), "{err}");
}

/// A Docker-like spec whose network namespace is the one at `path`, with `annotations`.
fn rewrite_joining_netns(
    path: &str,
    annotations: &[(&str, &str)],
) -> Result<Rewritten, RewriteError> {
    use oci_spec::runtime::{LinuxNamespaceBuilder, LinuxNamespaceType};
    let mut spec = docker_like(&[]);
    spec.set_annotations(Some(
        annotations
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect(),
    ));
    let mut linux = spec.linux().clone().unwrap();
    let mut namespaces: Vec<_> = linux
        .namespaces()
        .clone()
        .unwrap()
        .into_iter()
        .filter(|ns| ns.typ() != LinuxNamespaceType::Network)
        .collect();
    namespaces.push(
        LinuxNamespaceBuilder::default()
            .typ(LinuxNamespaceType::Network)
            .path(path)
            .build()
            .unwrap(),
    );
    linux.set_namespaces(Some(namespaces));
    spec.set_linux(Some(linux));
    rewrite(&spec, &RunqOptions::default(), &host(Accel::Tcg))
}

#[test]
fn a_named_network_namespace_prepared_for_the_container_is_joined() {
    let with_path = |path: &str| rewrite_joining_netns(path, &[]);
    // Podman's and CNI's names for a namespace made for this container.
    assert_eq!(
        with_path("/run/netns/netns-25d8453f").unwrap().vm.vm.net,
        NetMode::Tap
    );
    assert!(with_path("/var/run/netns/cni-1234").is_ok());
    // A process's, as `--network container:X` names X's: shared with X, not taken over.
    assert_eq!(
        with_path("/proc/4242424/ns/net").unwrap().vm.vm.net,
        NetMode::Shared
    );
    // Never the host's.
    let refused = with_path("/proc/self/ns/net").map(|_| ()).unwrap_err();
    assert!(refused.to_string().contains("the host's"), "{refused}");
}

#[test]
fn a_pod_application_container_joins_the_pods_network_namespace_by_the_sandboxs_pid() {
    let with_path = |path: &str| {
        rewrite_joining_netns(path, &[("io.kubernetes.cri.container-type", "container")])
    };
    // containerd's CRI names the pod's namespace by the sandbox's (pause's) process; the VM
    // shares it with the pod's other containers instead of taking its interface over.
    let out = with_path("/proc/4242424/ns/net").unwrap();
    assert_eq!(out.vm.vm.net, NetMode::Shared);
    // Never the host's, pod or not.
    assert!(with_path("/proc/self/ns/net").is_err());
}

#[test]
fn macvtap_mode_allows_the_macvtap_major_and_reaches_the_proxy() {
    let options = RunqOptions {
        net: NetMode::Macvtap,
        ..RunqOptions::default()
    };
    let out = rewrite(&docker_like(&[]), &options, &host(Accel::Tcg)).unwrap();
    assert_eq!(out.vm.vm.net, NetMode::Macvtap);
    let linux = out.spec.linux().as_ref().unwrap();
    let rules = linux
        .resources()
        .as_ref()
        .unwrap()
        .devices()
        .as_ref()
        .unwrap();
    assert!(rules
        .iter()
        .any(|r| r.allow() && r.major() == Some(246) && r.minor().is_none()));

    let tap = rewrite_default(&docker_like(&[]));
    assert_eq!(tap.vm.vm.net, NetMode::Tap);
    let rules = tap
        .spec
        .linux()
        .as_ref()
        .unwrap()
        .resources()
        .as_ref()
        .unwrap();
    assert!(!rules
        .devices()
        .as_ref()
        .unwrap()
        .iter()
        .any(|r| r.major() == Some(246)));
}

#[test]
fn macvtap_mode_is_refused_where_the_kernel_has_none() {
    let mut facts = host(Accel::Tcg);
    facts.macvtap_major = None;
    let err = rewrite(
        &docker_like(&["RUNQ_NET=macvtap"]),
        &RunqOptions::default(),
        &facts,
    )
    .unwrap_err();
    assert!(err.to_string().contains("macvtap"), "{err}");
}

#[test]
fn a_config_too_large_for_the_channel_is_refused_at_create() {
    let huge = format!("BIG={}", "x".repeat(17 << 20));
    let err = rewrite(
        &docker_like(&[huge.as_str()]),
        &RunqOptions::default(),
        &host(Accel::Tcg),
    )
    .unwrap_err();
    assert!(err.to_string().contains("17 MiB"), "{err}");
}

#[test]
fn paths_relative_to_the_bundle_are_anchored_to_the_engines() {
    let mut spec = docker_like(&[]);
    let mut mounts = spec.mounts().clone().unwrap();
    mounts.push(
        MountBuilder::default()
            .destination("/data")
            .typ("bind")
            .source("relative/data")
            .options(strings(&["rbind"]))
            .build()
            .unwrap(),
    );
    spec.set_mounts(Some(mounts));
    anchor_paths(&mut spec, Path::new("/engine/bundle"));
    assert_eq!(
        spec.root().as_ref().unwrap().path(),
        Path::new("/engine/bundle/rootfs")
    );
    let mounts = spec.mounts().as_ref().unwrap();
    let source_of = |destination: &str| {
        mounts
            .iter()
            .find(|m| m.destination() == Path::new(destination))
            .and_then(|m| m.source().clone())
    };
    assert_eq!(
        source_of("/data").as_deref(),
        Some(Path::new("/engine/bundle/relative/data"))
    );
    // Absolute sources and the sources of other mounts (proc, tmpfs) stay as they are.
    assert_eq!(
        source_of("/etc/hosts").as_deref(),
        Some(Path::new("/var/lib/docker/containers/x/hosts"))
    );
    assert_eq!(source_of("/proc").as_deref(), Some(Path::new("proc")));
}

fn with_devices(devices: Vec<LinuxDevice>, every_device: bool) -> Spec {
    let mut spec = docker_like(&[]);
    let mut linux = spec.linux().clone().unwrap();
    linux.set_devices(Some(devices));
    if every_device {
        let mut resources = linux.resources().clone().unwrap_or_default();
        resources.set_devices(Some(vec![LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .access("rwm")
            .build()
            .unwrap()]));
        linux.set_resources(Some(resources));
    }
    spec.set_linux(Some(linux));
    spec
}

fn device(path: &str, typ: LinuxDeviceType, major: i64, minor: i64) -> LinuxDevice {
    LinuxDeviceBuilder::default()
        .path(path)
        .typ(typ)
        .major(major)
        .minor(minor)
        .build()
        .unwrap()
}

#[test]
fn the_specs_devices_are_made_in_the_guest_and_runc_makes_only_runqs() {
    let mut fuse = device("/dev/fuse", LinuxDeviceType::C, 10, 229);
    fuse.set_file_mode(Some(0o20640));
    fuse.set_uid(Some(1000));
    fuse.set_gid(Some(100));
    let spec = with_devices(
        vec![
            fuse,
            device("/dev/my-fifo", LinuxDeviceType::P, 0, 0),
            device("/dev/runq/data/none", LinuxDeviceType::B, 8, 16),
        ],
        false,
    );
    let out = rewrite_default(&spec);
    let guest = &out.vm.guest;
    assert_eq!(
        guest.devices,
        vec![
            GuestDevice {
                path: "/dev/fuse".into(),
                kind: DeviceKind::Char,
                major: 10,
                minor: 229,
                mode: 0o640,
                uid: 1000,
                gid: 100,
            },
            GuestDevice {
                path: "/dev/my-fifo".into(),
                kind: DeviceKind::Fifo,
                major: 0,
                minor: 0,
                mode: 0o666,
                uid: 0,
                gid: 0,
            },
        ]
    );
    assert!(guest.name_driverless_devices);
    let host_nodes: Vec<String> = out
        .spec
        .linux()
        .as_ref()
        .unwrap()
        .devices()
        .iter()
        .flatten()
        .map(|d| d.path().to_string_lossy().into_owned())
        .collect();
    assert_eq!(host_nodes, ["/dev/runq/data/none", "/dev/net/tun"]);
}

#[test]
fn a_host_block_device_named_alone_is_refused_with_the_way_to_hand_it_over() {
    let spec = with_devices(vec![device("/dev/xvdb", LinuxDeviceType::B, 8, 16)], false);
    let error = rewrite(&spec, &RunqOptions::default(), &host(Accel::Tcg))
        .unwrap_err()
        .to_string();
    assert!(error.contains("/dev/xvdb (block 8:16)"), "{error}");
    assert!(error.contains("/dev/runq/<id>"), "{error}");
}

#[test]
fn every_host_device_leaves_the_block_devices_out_and_names_nothing() {
    let spec = with_devices(
        vec![
            device("/dev/sda", LinuxDeviceType::B, 8, 0),
            device("/dev/ttyS0", LinuxDeviceType::C, 4, 64),
        ],
        true,
    );
    let guest = rewrite_default(&spec).vm.guest;
    let paths: Vec<&str> = guest.devices.iter().map(|d| d.path.as_str()).collect();
    assert_eq!(paths, ["/dev/ttyS0"]);
    assert!(!guest.name_driverless_devices);
}

#[test]
fn a_device_path_that_climbs_or_is_relative_is_refused() {
    for path in ["/dev/../etc/x", "dev/null", "/"] {
        let spec = with_devices(vec![device(path, LinuxDeviceType::C, 1, 3)], false);
        let error = rewrite(&spec, &RunqOptions::default(), &host(Accel::Tcg))
            .unwrap_err()
            .to_string();
        assert!(error.contains(&format!("device {path}")), "{path}: {error}");
    }
}

fn in_user_namespace(spec: &mut Spec) {
    use oci_spec::runtime::{LinuxIdMappingBuilder, LinuxNamespaceBuilder, LinuxNamespaceType};
    let mut linux = spec.linux().clone().unwrap();
    let mut namespaces = linux.namespaces().clone().unwrap();
    namespaces.push(
        LinuxNamespaceBuilder::default()
            .typ(LinuxNamespaceType::User)
            .build()
            .unwrap(),
    );
    linux.set_namespaces(Some(namespaces));
    let mapping = |host_id: u32| {
        vec![LinuxIdMappingBuilder::default()
            .container_id(0u32)
            .host_id(host_id)
            .size(65536u32)
            .build()
            .unwrap()]
    };
    linux.set_uid_mappings(Some(mapping(100000)));
    linux.set_gid_mappings(Some(mapping(200000)));
    spec.set_linux(Some(linux));
}

#[test]
fn in_a_user_namespace_the_proxy_gets_a_tun_node_of_the_mapped_root() {
    let mut spec = docker_like(&[]);
    in_user_namespace(&mut spec);
    let out = rewrite_default(&spec);
    let node = out.tun_node.clone().unwrap();
    assert_eq!((node.uid, node.gid), (100000, 200000));
    assert_eq!(
        node.path,
        PathBuf::from("/var/lib/runq/nodes/tun-100000-200000")
    );
    let linux = out.spec.linux().as_ref().unwrap();
    assert!(!linux
        .devices()
        .iter()
        .flatten()
        .any(|d| d.path() == Path::new("/dev/net/tun")));
    let bound = out
        .spec
        .mounts()
        .iter()
        .flatten()
        .find(|m| m.destination() == Path::new("/dev/net/tun"))
        .unwrap();
    assert_eq!(bound.source().as_deref(), Some(node.path.as_path()));
    // Without a user namespace, runc makes the node as before.
    assert!(rewrite_default(&docker_like(&[])).tun_node.is_none());
}

#[test]
fn macvtap_in_a_user_namespace_is_refused() {
    let mut spec = docker_like(&[]);
    in_user_namespace(&mut spec);
    let options = RunqOptions {
        net: NetMode::Macvtap,
        ..RunqOptions::default()
    };
    let error = rewrite(&spec, &options, &host(Accel::Tcg))
        .unwrap_err()
        .to_string();
    assert!(error.contains("user namespace"), "{error}");
}
