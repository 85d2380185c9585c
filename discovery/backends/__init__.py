"""The network backends of ``discoveryd``: adapters that publish the registry's local services
and report other hosts' (``mdns``: mDNS/DNS-SD on the LAN through python-zeroconf; ``etcd``:
an etcd cluster beyond the LAN). Their pure rules sit beside the registry (``guard``,
``pacing``, ``etcdkeys``); the daemon wires the backends to it."""
