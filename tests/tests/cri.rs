//! Kubernetes without kubelet: a private containerd with its CRI plugin, runq registered as the
//! RuntimeClass handler `runq`, driven over the CRI gRPC API the way kubelet drives it. The pod
//! sandbox (pause) stays a runc container; each application container is a VM. Networking is
//! a private CNI bridge; images come from the local Docker (no registry is reachable).
//! `scripts/cri-setup.sh` installs what this needs (CNI plugins, protoc for k8s-cri).

mod common;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, CreateContainerRequest, ExecSyncRequest, ImageSpec,
    LinuxContainerConfig, LinuxContainerSecurityContext, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption, PodSandboxConfig,
    PodSandboxMetadata, PodSandboxStatusRequest, RemovePodSandboxRequest, RunPodSandboxRequest,
    StartContainerRequest, StatusRequest, StopPodSandboxRequest,
};
use serde_json::Value;
use tonic::transport::{Channel, Endpoint, Uri};

use common::{Outcome, RUN_DEADLINE};

/// The namespace CRI keeps its images and containers in.
const NAMESPACE: &str = "k8s.io";
const BUSYBOX: &str = "docker.io/library/busybox:latest";
/// Built from the local busybox image: the CRI plugin needs a sandbox image and no registry
/// is reachable for registry.k8s.io/pause.
const PAUSE: &str = "localhost/runq-pause:test";
const CNI_BIN_DIR: &str = "/usr/lib/cni";
/// How long one CRI call may take before the test gives up on containerd.
const CALL_DEADLINE: Duration = Duration::from_secs(120);

/// A containerd of this test alone, with CRI and a CNI bridge of its own; on drop its pods are
/// stopped and removed, and the daemon, its mounts, the bridge and the cgroups go with them.
struct Node {
    dir: tempfile::TempDir,
    daemon: Child,
    runtime: tokio::runtime::Runtime,
    client: RuntimeServiceClient<Channel>,
    bridge: String,
    cgroup_parent: String,
    pods: Vec<String>,
}

impl Node {
    /// `network` tells apart the tests of one process, which run in parallel: each gets its
    /// own bridge and subnet.
    fn start(network: u8) -> Node {
        let dir = tempfile::Builder::new()
            .prefix("runq-cri-")
            .tempdir_in("/var/tmp")
            .expect("temporary directory");
        let pid = std::process::id();
        // Bridge names are at most 15 bytes; pids at most 7 digits.
        let bridge = format!("rqcri{pid}-{network}");
        let subnet = format!("10.244.{}.0/24", 77 + network);
        write_cni_config(dir.path(), &bridge, &subnet);
        let daemon = common::containerd::start_daemon(dir.path(), &config_toml(dir.path()));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        // The channel spawns its connection task on the runtime it is made in.
        let client = {
            let _context = runtime.enter();
            RuntimeServiceClient::new(lazy_channel(&dir.path().join("containerd.sock")))
        };
        let mut node = Node {
            dir,
            daemon,
            runtime,
            client,
            bridge,
            cgroup_parent: format!("/runq-cri-{pid}-{network}"),
            pods: Vec::new(),
        };
        node.wait_until_ready();
        node.import_images();
        node
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// Runs one CRI call to its end, or fails after the call deadline.
    fn block<T>(
        &self,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, String> {
        match self
            .runtime
            .block_on(async { tokio::time::timeout(CALL_DEADLINE, call).await })
        {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(format!("{:?}: {}", status.code(), status.message())),
            Err(_) => Err(format!("no answer within {CALL_DEADLINE:?}")),
        }
    }

    /// Until CRI reports both the runtime and the network (the CNI config) ready, as kubelet
    /// waits before it schedules pods.
    fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut client = self.client.clone();
            let status = self.block(async move { client.status(StatusRequest::default()).await });
            let last = match status {
                Ok(status) => {
                    let conditions = status.status.map(|s| s.conditions).unwrap_or_default();
                    if !conditions.is_empty() && conditions.iter().all(|c| c.status) {
                        return;
                    }
                    format!("{conditions:?}")
                }
                Err(e) => e,
            };
            let log = self.log();
            // containerd serves on without CRI when the plugin's config is wrong.
            assert!(
                !log.contains("failed to load plugin io.containerd.grpc.v1.cri"),
                "containerd's CRI plugin did not load:\n{log}"
            );
            assert!(
                Instant::now() < deadline,
                "containerd's CRI was not ready within 60 s: {last}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn ctr(&self, args: &[&str]) -> Outcome {
        common::containerd::ctr(&self.dir.path().join("containerd.sock"), NAMESPACE, args)
    }

    /// Busybox and the pause image, from the local Docker into CRI's namespace: CRI sees
    /// images imported there as if it had pulled them.
    fn import_images(&self) {
        build_pause_image();
        let archive = self.dir.path().join("images.tar");
        common::docker::save_busybox(&archive);
        let imported = self.ctr(&["images", "import", &archive.to_string_lossy()]);
        assert!(imported.status.success(), "ctr images import: {imported:?}");
        let saved = common::docker::docker(&["save", "-o", &archive.to_string_lossy(), PAUSE]);
        assert!(saved.status.success(), "docker save {PAUSE}: {saved:?}");
        let imported = self.ctr(&["images", "import", &archive.to_string_lossy()]);
        assert!(imported.status.success(), "ctr images import: {imported:?}");
    }

    /// RunPodSandbox with the runq handler and kubelet's default namespaces: the pod's network,
    /// IPC and UTS, a PID namespace per container.
    fn run_pod(&mut self, name: &str) -> Pod {
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.to_string(),
                uid: format!("{name}-{}", std::process::id()),
                namespace: "default".to_string(),
                attempt: 0,
            }),
            hostname: name.to_string(),
            log_directory: self
                .dir
                .path()
                .join("pods")
                .join(name)
                .display()
                .to_string(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: format!("{}/{name}", self.cgroup_parent),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(namespace_options()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut client = self.client.clone();
        let request = RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: "runq".to_string(),
        };
        let id = self
            .block(async move { client.run_pod_sandbox(request).await })
            .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", self.log()))
            .pod_sandbox_id;
        self.pods.push(id.clone());
        Pod { id, config }
    }

    /// CreateContainer + StartContainer of a busybox container in `pod`; returns its id.
    fn start_container(&mut self, pod: &Pod, name: &str, command: &[&str]) -> String {
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.to_string(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: BUSYBOX.to_string(),
                ..Default::default()
            }),
            command: command.iter().map(|s| s.to_string()).collect(),
            log_path: format!("{name}/0.log"),
            linux: Some(LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    namespace_options: Some(namespace_options()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let request = CreateContainerRequest {
            pod_sandbox_id: pod.id.clone(),
            config: Some(config),
            sandbox_config: Some(pod.config.clone()),
        };
        let mut client = self.client.clone();
        let id = self
            .block(async move { client.create_container(request).await })
            .unwrap_or_else(|e| panic!("CreateContainer {name}: {e}\n{}", self.log()))
            .container_id;
        let mut client = self.client.clone();
        let request = StartContainerRequest {
            container_id: id.clone(),
        };
        self.block(async move { client.start_container(request).await })
            .unwrap_or_else(|e| panic!("StartContainer {name}: {e}\n{}", self.log()));
        id
    }

    /// What the container wrote to stdout and stderr (CRI's log file, which kubelet reads).
    fn container_log(&self, pod: &Pod, name: &str) -> String {
        let directory = pod.config.log_directory.clone();
        std::fs::read_to_string(Path::new(&directory).join(name).join("0.log"))
            .unwrap_or_else(|e| format!("({directory}/{name}/0.log: {e})"))
    }

    /// ExecSync: (exit code, stdout, stderr), or the CRI error.
    fn exec(&self, container: &str, cmd: &[&str]) -> Result<(i32, String, String), String> {
        let request = ExecSyncRequest {
            container_id: container.to_string(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 60,
        };
        let mut client = self.client.clone();
        self.block(async move { client.exec_sync(request).await })
            .map(|r| {
                (
                    r.exit_code,
                    String::from_utf8_lossy(&r.stdout).into_owned(),
                    String::from_utf8_lossy(&r.stderr).into_owned(),
                )
            })
    }

    /// ExecSync until it exits 0: the VM boots after StartContainer returns, and exec is only
    /// answered once the guest runs. Returns the last attempt, successful or not, early when
    /// the container has exited.
    fn exec_until_success(
        &self,
        container: &str,
        cmd: &[&str],
        within: Duration,
    ) -> Result<(i32, String, String), String> {
        let deadline = Instant::now() + within;
        loop {
            let outcome = self.exec(container, cmd);
            // An exited container answers no exec ever again.
            let exited = matches!(&outcome, Err(e) if e.contains("CONTAINER_EXITED"));
            if matches!(outcome, Ok((0, _, _))) || exited || Instant::now() >= deadline {
                return outcome;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// PodSandboxStatus's verbose info: containerd's own view, with the sandbox's pid and
    /// OCI spec (and so the pod's network namespace).
    fn pod_info(&self, pod: &Pod) -> Value {
        let request = PodSandboxStatusRequest {
            pod_sandbox_id: pod.id.clone(),
            verbose: true,
        };
        let mut client = self.client.clone();
        let status = self
            .block(async move { client.pod_sandbox_status(request).await })
            .expect("PodSandboxStatus");
        serde_json::from_str(status.info.get("info").expect("verbose info")).expect("info json")
    }

    /// StopPodSandbox + RemovePodSandbox, as kubelet does when a pod is deleted.
    fn remove_pod(&mut self, id: &str) -> Result<(), String> {
        let mut client = self.client.clone();
        let request = StopPodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        };
        self.block(async move { client.stop_pod_sandbox(request).await })
            .map_err(|e| format!("StopPodSandbox: {e}"))?;
        let mut client = self.client.clone();
        let request = RemovePodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        };
        self.block(async move { client.remove_pod_sandbox(request).await })
            .map_err(|e| format!("RemovePodSandbox: {e}"))?;
        self.pods.retain(|pod| pod != id);
        Ok(())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        for id in self.pods.clone() {
            let _ = self.remove_pod(&id);
        }
        // Whatever CRI could not remove: the shims outlive containerd, so their tasks must go
        // first.
        let tasks = self.ctr(&["tasks", "list", "--quiet"]).stdout_text();
        for id in tasks.lines().map(str::trim).filter(|id| !id.is_empty()) {
            let _ = self.ctr(&["tasks", "kill", "--signal", "SIGKILL", id]);
            let _ = self.ctr(&["tasks", "delete", "--force", id]);
            let _ = self.ctr(&["containers", "delete", id]);
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        common::unmount_below(self.dir.path());
        // The bridge plugin makes the bridge but CNI DEL leaves it.
        let _ = Command::new("ip")
            .args(["link", "delete", &self.bridge])
            .stderr(Stdio::null())
            .status();
        // runc removes the containers' cgroups; the pod's parent is kubelet's to remove.
        for cgroup in cgroup_dirs(&self.cgroup_parent) {
            remove_cgroup_tree(&cgroup);
        }
    }
}

struct Pod {
    id: String,
    config: PodSandboxConfig,
}

/// kubelet's defaults for a pod without hostNetwork, hostPID or shareProcessNamespace.
fn namespace_options() -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Pod as i32,
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// A gRPC channel over containerd's unix socket, connected on first use (the daemon may not
/// be listening yet).
fn lazy_channel(socket: &Path) -> Channel {
    let socket = socket.to_path_buf();
    // The URI is required but unused: the connector ignores it.
    Endpoint::from_static("http://[::]:50051").connect_with_connector_lazy(tower::service_fn(
        move |_: Uri| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        },
    ))
}

/// The pause image: busybox sleeping forever, built once into the local Docker.
fn build_pause_image() {
    if common::docker::docker(&["image", "inspect", PAUSE])
        .status
        .success()
    {
        return;
    }
    let dockerfile = format!(
        "FROM {}\nCMD [\"sleep\", \"infinity\"]\n",
        common::docker::IMAGE
    );
    let built = common::docker::docker_with_input(
        &["build", "--quiet", "--tag", PAUSE, "-"],
        dockerfile.as_bytes(),
    );
    assert!(built.status.success(), "docker build {PAUSE}: {built:?}");
}

/// One CNI network: a bridge with host-local addresses on a private subnet, the addresses
/// kept in the temporary directory. containerd adds the loopback plugin itself.
fn write_cni_config(dir: &Path, bridge: &str, subnet: &str) {
    let conf_dir = dir.join("cni");
    std::fs::create_dir_all(&conf_dir).expect("CNI config dir");
    let config = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": bridge,
        "plugins": [{
            "type": "bridge",
            "bridge": bridge,
            "isGateway": true,
            // No masquerading: the pod needs no way out, and no iptables rule is left behind.
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "ranges": [[{ "subnet": subnet }]],
                "dataDir": dir.join("cni-ipam").display().to_string(),
            },
        }],
    });
    std::fs::write(
        conf_dir.join("10-runq.conflist"),
        serde_json::to_vec_pretty(&config).expect("json"),
    )
    .expect("write CNI config");
}

fn config_toml(dir: &Path) -> String {
    let runq = common::runq_binary();
    let runq = runq.display();
    let dir = dir.display();
    format!(
        r#"version = 2
root = "{dir}/root"
state = "{dir}/state"

[grpc]
  address = "{dir}/containerd.sock"

[ttrpc]
  address = "{dir}/containerd.sock.ttrpc"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE}"
  # The sandbox asks for oom_score_adj -998, below this test process's own score, which an
  # unprivileged or containerised containerd may not set: runc then fails with "can't get
  # final child's PID from pipe". Restricted, the score is never below containerd's own.
  restrict_oom_score_adj = true
  # Port 0: any free port, so that parallel tests and a real kubelet's containerd can coexist.
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

# Defining one runtime drops the built-in runc entry, which the default runtime must name.
[plugins."io.containerd.grpc.v1.cri".containerd]
  default_runtime_name = "runc"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runq]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runq.options]
  BinaryName = "{runq}"
  # runc's state of this containerd alone, not the system's /run/containerd/runc.
  Root = "{dir}/runc"

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "{CNI_BIN_DIR}"
  conf_dir = "{dir}/cni"
"#
    )
}

/// The cgroup directories of `parent` on this host: one per v1 hierarchy, or the v2 one.
fn cgroup_dirs(parent: &str) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let relative = parent.trim_start_matches('/');
    if root.join("cgroup.controllers").exists() {
        return vec![root.join(relative)];
    }
    std::fs::read_dir(root)
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| entry.path().join(relative))
                .collect()
        })
        .unwrap_or_default()
}

/// Empty cgroups are removed with rmdir, deepest first.
fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Pids of every process whose command line contains `needle`.
fn processes_mentioning(needle: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .collect()
}

fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .unwrap_or_default()
}

/// The pod's network namespace, from the sandbox's OCI spec.
fn pod_netns(info: &Value) -> PathBuf {
    info["runtimeSpec"]["linux"]["namespaces"]
        .as_array()
        .and_then(|namespaces| {
            namespaces
                .iter()
                .find(|ns| ns["type"] == "network")
                .and_then(|ns| ns["path"].as_str())
        })
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("no network namespace path in the sandbox spec: {info}"))
}

/// The QEMUs below the pod's shim: one per application container.
fn pod_vms(shim: i32) -> Vec<i32> {
    common::descendants(shim)
        .into_iter()
        .filter(|pid| {
            // QEMU runs through the assets' loader: its comm is the loader's, its cmdline
            // names QEMU.
            cmdline(*pid).contains("qemu-system")
        })
        .collect()
}

fn mounts_below(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_whitespace().nth(4))
        .filter(|point| point.starts_with(prefix.as_str()))
        .map(str::to_string)
        .collect()
}

#[test]
fn cri_pod_runs_each_application_container_in_a_vm() {
    let mut node = Node::start(0);
    let pod = node.run_pod("vms");
    let info = node.pod_info(&pod);
    let netns = pod_netns(&info);
    assert!(
        netns.exists(),
        "the pod's network namespace {}",
        netns.display()
    );
    // The pause container is a plain runc container: its process is the image's command on
    // the host, not a VM.
    let pause = info["pid"]
        .as_i64()
        .expect("sandbox pid in the verbose info") as i32;
    // Read until it is there: the sandbox may still be in runc's exec of it, when its
    // cmdline reads empty.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let command = cmdline(pause);
        if command.trim() == "sleep infinity" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the pod's sandbox runs {command:?}, not the pause image's sleep infinity"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let a = node.start_container(&pod, "a", &["sleep", "1000"]);
    let b = node.start_container(&pod, "b", &["sleep", "1000"]);
    for (name, id) in [("a", &a), ("b", &b)] {
        let outcome = node.exec_until_success(id, &["uname", "-r"], RUN_DEADLINE);
        match outcome {
            Ok((0, stdout, _)) => assert_eq!(
                stdout.trim(),
                common::guest_release(),
                "container {name} runs the guest kernel"
            ),
            other => panic!(
                "ExecSync uname -r in container {name}: {other:?}\ncontainer log: {}",
                node.container_log(&pod, name)
            ),
        }
    }
    // Both containers are VMs under the pod's one shim (runc.v2 groups a pod's containers).
    let shim = processes_mentioning(&pod.id)
        .into_iter()
        .find(|pid| cmdline(*pid).contains("containerd-shim"))
        .expect("the pod's shim");
    let vms = pod_vms(shim);
    assert_eq!(vms.len(), 2, "one QEMU per application container: {vms:?}");

    node.remove_pod(&pod.id)
        .unwrap_or_else(|e| panic!("{e}\n{}", node.log()));
    let left: Vec<String> = vms
        .iter()
        .copied()
        .filter(|vm| common::alive(*vm))
        .map(cmdline)
        .collect();
    assert!(
        left.is_empty(),
        "QEMUs left after RemovePodSandbox: {left:?}"
    );
    for id in [&pod.id, &a, &b] {
        let left = processes_mentioning(id);
        let left: Vec<String> = left.into_iter().map(cmdline).collect();
        assert!(left.is_empty(), "processes left that name {id}: {left:?}");
    }
    assert!(
        !netns.exists(),
        "the pod's network namespace {} outlived the pod",
        netns.display()
    );
    let mounts = mounts_below(node.dir.path());
    assert!(mounts.is_empty(), "mounts left: {mounts:?}");
}

/// What makes a pod a pod: its containers share one network namespace, so one reaches another
/// on 127.0.0.1. Each runq container is its own VM with its own loopback; the proxies and
/// guest inits mirror listening ports between them (runq-mirror).
#[test]
fn cri_pod_containers_reach_each_other_over_localhost() {
    let mut node = Node::start(1);
    let pod = node.run_pod("localhost");
    let server = node.start_container(
        &pod,
        "server",
        &[
            "sh",
            "-c",
            "mkdir -p /www && echo hello-from-a > /www/index.html \
             && exec httpd -f -p 8080 -h /www",
        ],
    );
    let client = node.start_container(&pod, "client", &["sleep", "1000"]);
    // Both VMs must be up before the answer can come; the deadline covers the two boots.
    let within = Duration::from_secs(90);
    let outcome = node.exec_until_success(
        &client,
        // No -T: busybox 1.35's wget crashes with a timeout set when the connection is refused.
        &["wget", "-q", "-O", "-", "http://127.0.0.1:8080/"],
        within,
    );
    let server_up = node.exec(&server, &["true"]);
    match outcome {
        Ok((0, stdout, _)) => assert_eq!(stdout.trim(), "hello-from-a"),
        other => panic!(
            "container client never reached container server on 127.0.0.1:8080 within \
             {within:?}\nlast wget: {other:?}\n\
             server answers exec: {server_up:?}\nserver log: {}\nclient log: {}",
            node.container_log(&pod, "server"),
            node.container_log(&pod, "client"),
        ),
    }
    node.remove_pod(&pod.id)
        .unwrap_or_else(|e| panic!("{e}\n{}", node.log()));
}
