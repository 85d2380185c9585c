"""Tools shared by the tests, the benchmarks and the demos, not part of the three programs: a
private Xvfb (`xvfb`), a delaying TCP relay (`delayrelay`, `python -m testing.delayrelay`),
network namespaces (`netns`), the WAN lab of two hosts joined by delaying relays (`wanlab`),
an sshd for side-by-side runs (`sshlab`), an etcd cluster (`etcd_cluster`), replica processes
(`replicas`), X11 byte builders (`x11wire`), waiting for a daemon's `ready` (`ready`) and
skipping without an X program (`xserver`). Import the modules by name."""
