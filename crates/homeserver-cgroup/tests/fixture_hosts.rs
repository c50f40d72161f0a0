//! Whole fake hosts, v1/hybrid and v2, read through `CgroupReader`: the
//! only way to test v2 on a v1 machine (and v1 layouts this one lacks).
#![allow(clippy::unwrap_used, reason = "test helpers outside #[test] fns fail the test loudly")]

mod support;

use std::fs;
use std::sync::Arc;
use std::time::{Duration, Instant};

use homeserver_cgroup::{CgroupError, CgroupMode, CgroupReader, CgroupRoots, CgroupSample, CpuMeter};
use support::{Container, MEM_TOTAL, v1_host, v2_host, write};

fn reader(roots: CgroupRoots) -> CgroupReader {
    CgroupReader::new(roots).unwrap()
}

#[test]
fn v2_host_reads_docker_and_lxc_containers() {
    let dir = tempfile::tempdir().unwrap();
    let containers = [Container::docker_v2(0), Container::docker_v2(1), Container::lxc(2, "web")];
    let reader = reader(v2_host(dir.path(), &containers));
    assert_eq!(reader.mode(), CgroupMode::V2);
    for c in &containers {
        assert_eq!(reader.read_pid(c.pid).unwrap(), c.expected(), "{}", c.proc_cgroup);
    }
    // Spot-check the arithmetic once, not only against the helper.
    let first = reader.read_pid(containers[0].pid).unwrap();
    assert_eq!(first.cpu_usage_ns, 1_000_123_000);
    assert_eq!(first.memory_bytes, 91 << 20);
    assert_eq!(first.memory_limit_bytes, Some(512 << 20));
    assert_eq!((first.block_read_bytes, first.block_write_bytes), (4096, 8192));
    assert_eq!((first.network_rx_bytes, first.network_tx_bytes), (1000, 500));
    assert_eq!(reader.read_pid(containers[1].pid).unwrap().memory_limit_bytes, None, "memory.max = max");
}

#[test]
fn v1_hybrid_host_reads_docker_and_lxc_containers() {
    let dir = tempfile::tempdir().unwrap();
    let containers = [Container::docker_v1(0), Container::docker_v1(1), Container::lxc(2, "web")];
    let roots = v1_host(dir.path(), &containers);
    // Hybrid: a v2 hierarchy exists, but below the root.
    assert!(roots.cgroup_root.join("unified/cgroup.controllers").exists());
    let reader = reader(roots);
    assert_eq!(reader.mode(), CgroupMode::V1);
    for c in &containers {
        assert_eq!(reader.read_pid(c.pid).unwrap(), c.expected(), "{}", c.proc_cgroup);
    }
    let unlimited = reader.read_pid(containers[1].pid).unwrap();
    assert_eq!(unlimited.memory_limit_bytes, None, "9223372036854771712 is no limit");
    // total_inactive_file (10 MiB), not the cgroup's own inactive_file (4 KiB).
    assert_eq!(unlimited.memory_bytes, (102 - 10) << 20);
}

#[test]
fn v1_cpuacct_found_as_a_co_mount_without_symlinks() {
    let dir = tempfile::tempdir().unwrap();
    let c = Container::docker_v1(0);
    let roots = v1_host(dir.path(), std::slice::from_ref(&c));
    fs::remove_file(roots.cgroup_root.join("cpu")).unwrap();
    fs::remove_file(roots.cgroup_root.join("cpuacct")).unwrap();
    assert_eq!(reader(roots).read_pid(c.pid).unwrap(), c.expected());
}

#[test]
fn v1_cpuacct_as_its_own_mount_like_this_host() {
    let dir = tempfile::tempdir().unwrap();
    let c = Container::docker_v1(0);
    let roots = v1_host(dir.path(), std::slice::from_ref(&c));
    fs::remove_file(roots.cgroup_root.join("cpu")).unwrap();
    fs::remove_file(roots.cgroup_root.join("cpuacct")).unwrap();
    fs::rename(roots.cgroup_root.join("cpu,cpuacct"), roots.cgroup_root.join("cpuacct")).unwrap();
    fs::create_dir(roots.cgroup_root.join("cpu")).unwrap();
    // As on this host: `2:cpuacct:` and `1:cpu:` on separate lines.
    let p = &c.cgroup;
    let lines = format!("12:pids:{p}\n10:blkio:{p}\n9:memory:{p}\n2:cpuacct:{p}\n1:cpu:{p}\n0::/\n");
    write(&roots.proc_root, &format!("{}/cgroup", c.pid), &lines);
    assert_eq!(reader(roots).read_pid(c.pid).unwrap(), c.expected());
}

#[test]
fn v1_missing_controllers_and_files_give_zero_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let c = Container::docker_v1(0);
    let roots = v1_host(dir.path(), std::slice::from_ref(&c));
    fs::remove_dir_all(roots.cgroup_root.join("blkio")).unwrap();
    fs::remove_dir_all(roots.cgroup_root.join("pids")).unwrap();
    let memory = roots.cgroup_root.join("memory").join(c.cgroup.trim_start_matches('/'));
    fs::remove_file(memory.join("memory.limit_in_bytes")).unwrap();
    fs::remove_file(memory.join("memory.stat")).unwrap();
    let sample = reader(roots).read_pid(c.pid).unwrap();
    let expected = CgroupSample {
        block_read_bytes: 0,
        block_write_bytes: 0,
        pids: 0,
        memory_limit_bytes: None,
        // Without memory.stat nothing is subtracted.
        memory_bytes: c.memory_usage,
        ..c.expected()
    };
    assert_eq!(sample, expected);
}

#[test]
fn v1_line_missing_from_proc_cgroup_gives_zero() {
    let dir = tempfile::tempdir().unwrap();
    let c = Container::docker_v1(0);
    let roots = v1_host(dir.path(), std::slice::from_ref(&c));
    write(&roots.proc_root, &format!("{}/cgroup", c.pid), &format!("9:memory:{}\n0::/\n", c.cgroup));
    let sample = reader(roots).read_pid(c.pid).unwrap();
    assert_eq!(sample.cpu_usage_ns, 0);
    assert_eq!(sample.pids, 0);
    assert_eq!(sample.memory_bytes, c.expected().memory_bytes);
}

#[test]
fn v2_missing_files_give_zero_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let c = Container::docker_v2(0);
    let roots = v2_host(dir.path(), std::slice::from_ref(&c));
    let cg = roots.cgroup_root.join(c.cgroup.trim_start_matches('/'));
    for file in ["io.stat", "pids.current", "memory.max", "memory.stat", "cpu.stat"] {
        fs::remove_file(cg.join(file)).unwrap();
    }
    let sample = reader(roots).read_pid(c.pid).unwrap();
    let expected = CgroupSample {
        cpu_usage_ns: 0,
        memory_bytes: c.memory_usage,
        memory_limit_bytes: None,
        block_read_bytes: 0,
        block_write_bytes: 0,
        pids: 0,
        ..c.expected()
    };
    assert_eq!(sample, expected);
}

#[test]
fn container_whose_cgroup_was_removed_reads_as_zero_while_its_pid_exists() {
    let dir = tempfile::tempdir().unwrap();
    let c = Container::docker_v2(0);
    let roots = v2_host(dir.path(), std::slice::from_ref(&c));
    fs::remove_dir_all(roots.cgroup_root.join("system.slice")).unwrap();
    let sample = reader(roots).read_pid(c.pid).unwrap();
    assert_eq!(sample.cpu_usage_ns, 0);
    assert_eq!(sample.network_rx_bytes, c.rx_bytes);
}

#[test]
fn unknown_or_vanished_pids_are_gone() {
    let dir = tempfile::tempdir().unwrap();
    let containers = [Container::docker_v2(0), Container::docker_v2(1)];
    let roots = v2_host(dir.path(), &containers);
    let proc_root = roots.proc_root.clone();
    let reader = reader(roots);
    assert!(matches!(reader.read_pid(4242), Err(CgroupError::Gone { pid: 4242 })));
    assert!(matches!(reader.read_pid(u32::MAX), Err(CgroupError::Gone { .. })));
    // The process exited: its /proc folder went away.
    fs::remove_dir_all(proc_root.join(containers[0].pid.to_string())).unwrap();
    assert!(matches!(reader.read_pid(containers[0].pid), Err(CgroupError::Gone { .. })));
    // A reaped process's cgroup file reads empty.
    write(&proc_root, &format!("{}/cgroup", containers[1].pid), "");
    assert!(matches!(reader.read_pid(containers[1].pid), Err(CgroupError::Gone { .. })));
    assert_eq!(CgroupError::Gone { pid: 7 }.to_string(), "process 7 is gone");
}

#[test]
fn limits_at_or_above_mem_total_are_no_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut v1 = [Container::docker_v1(0), Container::docker_v1(1)];
    v1[0].limit = Some(MEM_TOTAL);
    v1[1].limit = Some(MEM_TOTAL - 4096);
    let reader1 = reader(v1_host(&dir.path().join("v1"), &v1));
    assert_eq!(reader1.read_pid(v1[0].pid).unwrap().memory_limit_bytes, None);
    assert_eq!(reader1.read_pid(v1[1].pid).unwrap().memory_limit_bytes, Some(MEM_TOTAL - 4096));

    let mut v2 = [Container::docker_v2(0), Container::docker_v2(1)];
    v2[0].limit = Some(MEM_TOTAL + 1);
    v2[1].limit = Some(6 << 20);
    let reader2 = reader(v2_host(&dir.path().join("v2"), &v2));
    assert_eq!(reader2.read_pid(v2[0].pid).unwrap().memory_limit_bytes, None);
    assert_eq!(reader2.read_pid(v2[1].pid).unwrap().memory_limit_bytes, Some(6 << 20));
}

#[test]
fn limits_without_meminfo_only_drop_the_v1_unlimited_value() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = [Container::docker_v1(0), Container::docker_v1(1)];
    c[0].limit = Some(MEM_TOTAL * 4);
    let roots = v1_host(dir.path(), &c);
    fs::remove_file(roots.proc_root.join("meminfo")).unwrap();
    let reader = reader(roots);
    assert_eq!(reader.read_pid(c[0].pid).unwrap().memory_limit_bytes, Some(MEM_TOTAL * 4));
    assert_eq!(reader.read_pid(c[1].pid).unwrap().memory_limit_bytes, None);
}

#[test]
fn v1_blkio_falls_back_to_cfq_then_to_the_non_recursive_file() {
    let dir = tempfile::tempdir().unwrap();
    let c = Container::docker_v1(0);
    let roots = v1_host(dir.path(), std::slice::from_ref(&c));
    let blkio = roots.cgroup_root.join("blkio").join(c.cgroup.trim_start_matches('/'));
    let reader = reader(roots);
    fs::remove_file(blkio.join("blkio.throttle.io_service_bytes_recursive")).unwrap();
    fs::write(blkio.join("blkio.io_service_bytes_recursive"), "8:0 Read 70\n8:0 Write 30\n8:0 Total 100\nTotal 100\n")
        .unwrap();
    let sample = reader.read_pid(c.pid).unwrap();
    assert_eq!((sample.block_read_bytes, sample.block_write_bytes), (70, 30));
    fs::remove_file(blkio.join("blkio.io_service_bytes_recursive")).unwrap();
    let sample = reader.read_pid(c.pid).unwrap();
    assert_eq!((sample.block_read_bytes, sample.block_write_bytes), (1, 1));
}

#[test]
fn host_network_is_flagged_and_hidden_from_stats() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Container::docker_v2(0);
    c.host_network = true;
    let reader = reader(v2_host(dir.path(), std::slice::from_ref(&c)));
    let sample = reader.read_pid(c.pid).unwrap();
    assert!(sample.host_network);
    assert_eq!(sample.network_rx_bytes, c.rx_bytes, "the sample keeps what the file says");
    let stats = sample.to_stats(1.5);
    assert_eq!((stats.network_rx_bytes, stats.network_tx_bytes), (0, 0));
    assert_eq!(stats.memory_bytes, sample.memory_bytes);
    assert_eq!(stats.cpu_percent, 1.5);
}

#[test]
fn host_network_is_unknown_without_pid_1s_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Container::docker_v2(0);
    c.host_network = true;
    let roots = v2_host(dir.path(), std::slice::from_ref(&c));
    fs::remove_file(roots.proc_root.join("1/ns/net")).unwrap();
    assert!(!reader(roots).read_pid(c.pid).unwrap().host_network);
}

#[test]
fn malformed_file_is_a_parse_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let c = Container::docker_v1(0);
    let roots = v1_host(dir.path(), std::slice::from_ref(&c));
    let file = roots.cgroup_root.join("memory").join(c.cgroup.trim_start_matches('/')).join("memory.usage_in_bytes");
    fs::write(&file, "lots\n").unwrap();
    let err = reader(roots).read_pid(c.pid).unwrap_err();
    assert!(matches!(err, CgroupError::Parse { ref path, .. } if *path == file), "{err:?}");
    assert_eq!(err.to_string(), format!("cannot parse {}: not a number", file.display()));
}

#[test]
fn malformed_net_dev_is_a_parse_error() {
    let dir = tempfile::tempdir().unwrap();
    let c = Container::docker_v2(0);
    let roots = v2_host(dir.path(), std::slice::from_ref(&c));
    write(&roots.proc_root, &format!("{}/net/dev", c.pid), "h\nh\neth0: 1 2\n");
    let err = reader(roots).read_pid(c.pid).unwrap_err();
    assert!(err.to_string().ends_with("/net/dev: malformed line"), "{err}");
}

#[test]
fn cgroup_outside_the_readers_namespace_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let c = Container::docker_v2(0);
    let roots = v2_host(dir.path(), std::slice::from_ref(&c));
    write(&roots.proc_root, &format!("{}/cgroup", c.pid), "0::/../../system.slice/docker-abc.scope\n");
    let err = reader(roots).read_pid(c.pid).unwrap_err();
    assert!(err.to_string().contains("outside this cgroup namespace"), "{err}");
}

#[test]
fn v2_host_without_a_v2_line_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let c = Container::docker_v2(0);
    let roots = v2_host(dir.path(), std::slice::from_ref(&c));
    write(&roots.proc_root, &format!("{}/cgroup", c.pid), "4:memory:/docker/abc\n");
    let err = reader(roots).read_pid(c.pid).unwrap_err();
    assert!(err.to_string().ends_with(&format!("{}/cgroup: no cgroup v2 line (0::)", c.pid)), "{err}");
}

#[test]
fn new_fails_on_a_missing_root_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let err =
        CgroupReader::new(CgroupRoots { proc_root: dir.path().to_owned(), cgroup_root: missing.clone() }).unwrap_err();
    assert_eq!(err.to_string(), format!("cannot read {}", missing.display()));
    let file = dir.path().join("file");
    fs::write(&file, "").unwrap();
    let err =
        CgroupReader::new(CgroupRoots { proc_root: file.clone(), cgroup_root: dir.path().to_owned() }).unwrap_err();
    assert!(matches!(err, CgroupError::Io { ref path, .. } if *path == file), "{err:?}");
}

#[test]
fn one_reader_serves_many_threads() {
    let dir = tempfile::tempdir().unwrap();
    let containers: Vec<Container> = (0..8).map(Container::docker_v1).collect();
    let reader = Arc::new(reader(v1_host(dir.path(), &containers)));
    let containers = Arc::new(containers);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (reader, containers) = (Arc::clone(&reader), Arc::clone(&containers));
            std::thread::spawn(move || {
                for _ in 0..50 {
                    for c in containers.iter() {
                        assert_eq!(reader.read_pid(c.pid).unwrap(), c.expected());
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn cpu_percent_from_two_fixture_readings() {
    let dir = tempfile::tempdir().unwrap();
    let c = Container::docker_v2(0);
    let roots = v2_host(dir.path(), std::slice::from_ref(&c));
    let cpu_stat = roots.cgroup_root.join(c.cgroup.trim_start_matches('/')).join("cpu.stat");
    let reader = reader(roots);
    let mut meter = CpuMeter::new();
    let t0 = Instant::now();
    assert_eq!(meter.update(reader.read_pid(c.pid).unwrap().cpu_usage_ns, t0), 0.0);
    // 1.5 s of CPU in 1 s: one and a half cores.
    fs::write(&cpu_stat, format!("usage_usec {}\n", c.cpu_ns / 1000 + 1_500_000)).unwrap();
    let pct = meter.update(reader.read_pid(c.pid).unwrap().cpu_usage_ns, t0 + Duration::from_secs(1));
    assert!((pct - 150.0).abs() < 1e-9, "{pct}");
}

#[test]
fn a_pid_read_for_a_container_must_be_in_that_containers_cgroup() {
    let dir = tempfile::tempdir().unwrap();
    let containers = [Container::docker_v2(0), Container::lxc(1, "web")];
    let reader = reader(v2_host(dir.path(), &containers));
    let docker = &containers[0];
    let id = docker.proc_cgroup.rsplit('/').next().unwrap().trim_start_matches("docker-").trim_end_matches(".scope");
    assert_eq!(reader.read_pid_in(docker.pid, id).unwrap(), docker.expected(), "{}", docker.proc_cgroup);
    assert_eq!(reader.read_pid_in(containers[1].pid, "lxc.payload.web").unwrap(), containers[1].expected());
    // The lxc container's pid is not the docker container's: refused, not read.
    for (pid, mark) in [(containers[1].pid, id), (docker.pid, "")] {
        match reader.read_pid_in(pid, mark) {
            Err(CgroupError::Parse { what, .. }) => assert!(what.contains("not in the container's cgroup"), "{what}"),
            other => panic!("expected Parse, got {other:?}"),
        }
    }
    assert!(matches!(reader.read_pid_in(4242, id), Err(CgroupError::Gone { pid: 4242 })));
}

#[test]
fn kept_files_are_read_again_in_place_and_reopened_for_a_new_pid() {
    let dir = tempfile::tempdir().unwrap();
    let containers = [Container::docker_v1(0), Container::docker_v1(1)];
    let roots = v1_host(dir.path(), &containers);
    let c = &containers[0];
    let id = c.proc_cgroup.lines().next().unwrap().rsplit('/').next().unwrap().to_owned();
    let usage = roots.cgroup_root.join("cpuacct").join(c.cgroup.trim_start_matches('/')).join("cpuacct.usage");
    let reader = reader(roots);
    assert!(reader.kept_limit() > 0, "a test process has descriptors to spare");

    assert_eq!(reader.read_container(c.pid, &id).unwrap(), c.expected());
    assert_eq!(reader.kept(), 1);
    // The kept descriptor sees the file's new content (written in place).
    fs::write(&usage, format!("{}\n", c.cpu_ns + 7)).unwrap();
    assert_eq!(reader.read_container(c.pid, &id).unwrap().cpu_usage_ns, c.cpu_ns + 7);
    assert_eq!(reader.kept(), 1);

    // Another pid under the same mark is opened afresh, and checked: the
    // second container's pid is not in the first one's cgroup.
    match reader.read_container(containers[1].pid, &id) {
        Err(CgroupError::Parse { what, .. }) => assert!(what.contains("not in the container's cgroup"), "{what}"),
        other => panic!("expected Parse, got {other:?}"),
    }
    assert_eq!(reader.kept(), 0, "a failed read keeps nothing");
    assert!(matches!(reader.read_container(4242, &id), Err(CgroupError::Gone { pid: 4242 })));

    assert_eq!(reader.read_container(c.pid, &id).unwrap().cpu_usage_ns, c.cpu_ns + 7);
    // The timed reads give the same figures, stamped during the call.
    for kept in [true, false] {
        if !kept {
            reader.forget(&id);
        }
        let before = std::time::Instant::now();
        let (sample, at) = reader.read_container_timed(c.pid, &id).unwrap();
        assert!(before <= at && at <= std::time::Instant::now());
        assert_eq!(sample.cpu_usage_ns, c.cpu_ns + 7);
        let (sample, at) = reader.read_pid_timed(c.pid).unwrap();
        assert!(before <= at && at <= std::time::Instant::now());
        assert_eq!(sample.cpu_usage_ns, c.cpu_ns + 7);
    }
    reader.forget(&id);
    assert_eq!(reader.kept(), 0);
}

#[test]
fn a_kept_limit_of_zero_reads_afresh_every_time() {
    let dir = tempfile::tempdir().unwrap();
    let c = Container::docker_v2(0);
    let reader = reader(v2_host(dir.path(), std::slice::from_ref(&c))).with_kept_limit(0);
    let id = c.proc_cgroup.rsplit('/').next().unwrap().trim_start_matches("docker-").trim_end_matches(".scope");
    for _ in 0..3 {
        assert_eq!(reader.read_container(c.pid, id).unwrap(), c.expected());
        assert_eq!(reader.kept(), 0);
    }
}
