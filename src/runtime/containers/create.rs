//! Creating a container: the pipeline from an image to a record (unpack, snapshot, mount,
//! network, spec, record), undone step by step when a later step fails.

use super::*;

impl Manager {
    /// Creates a container: unpacks the image if needed, prepares and mounts its snapshot,
    /// builds its OCI spec, and records it.
    pub async fn create(&self, ns: &str, o: CreateOptions) -> Result<ContainerRecord> {
        let d = &self.deps;
        d.store.require_namespace(ns)?;
        let rt = plugin::resolve(&d.config, Some(&o.runtime))?;
        let name = if o.name.is_empty() {
            self.generate_name(ns)?
        } else {
            validate_name(&o.name)?;
            o.name.clone()
        };
        if self.records(ns)?.iter().any(|r| r.name == name) {
            return Err(Error::AlreadyExists(format!(
                "the container name {name:?} is in use: remove that container (`nook rm {name}`) or choose another --name"
            )));
        }
        // parse what can be checked before any work
        let (mut binds, mut vols) = (Vec::<BindMount>::new(), Vec::<VolumeMount>::new());
        for v in &o.volumes {
            match VolumeArg::parse(v)? {
                VolumeArg::Bind(b) => binds.push(b),
                VolumeArg::Volume(m) => vols.push(m),
            }
        }
        let tmpfs: Vec<TmpfsMount> = o
            .tmpfs
            .iter()
            .map(|t| TmpfsMount::parse(t))
            .collect::<Result<_>>()?;
        spec::capability_set(o.privileged, &o.cap_add, &o.cap_drop)?;
        let ulimits: Vec<spec::Ulimit> = o
            .ulimits
            .iter()
            .map(|u| spec::Ulimit::parse(u))
            .collect::<Result<_>>()?;
        for u in &ulimits {
            u.check_allowed()?;
        }
        let init = if o.init {
            Some(spec::find_init()?)
        } else {
            None
        };
        let mut publish = o.publish.clone();
        if o.publish_all {
            publish.extend(exposed_ports_to_publish(d, ns, &o.image, &o.publish)?);
        }
        let ports = crate::network::ports::parse_all(&publish)?;
        let port_driver = if o.port_driver.is_empty() {
            d.config.network.port_driver.as_str()
        } else {
            o.port_driver.as_str()
        };
        if !crate::network::ports::PORT_DRIVERS.contains(&port_driver) {
            return Err(Error::InvalidArgument(format!(
                "unknown port driver {port_driver:?}: use relay or direct"
            )));
        }
        let direct = port_driver == "direct" && !ports.is_empty();
        if o.pod.is_some() && !ports.is_empty() {
            return Err(Error::InvalidArgument(
                "a container of a pod publishes no ports of its own: the pod's port mappings publish them".into(),
            ));
        }
        if let Some(why) = direct.then(crate::shim::direct::unsupported).flatten() {
            return Err(Error::Precondition(why));
        }
        let restart_policy = RestartPolicy::parse(&o.restart)?;
        o.limits.check(&d.cgroups)?;
        super::limits::check_runtime(&d.cgroups, &o.limits.resources, &rt)?;
        if o.auto_remove && restart_policy != RestartPolicy::No {
            return Err(Error::InvalidArgument(format!(
                "--restart {restart_policy} and --rm do not go together: a container removed when it exits cannot be restarted; drop one of them"
            )));
        }

        let id = new_id();
        let _gc = d.gc.lock.read().await;
        let bundle = self.tasks.bundle_dir(ns, &id);
        let rootfs = bundle.join("rootfs");
        let rootfs2 = rootfs.clone();
        let hostname = if o.hostname.is_empty() {
            id[..12].to_string()
        } else {
            o.hostname.clone()
        };
        // the container's network first: its namespace path goes into the spec, and its
        // /etc/hosts and resolv.conf into the bundle; a pod's container joins the pod's
        let mut etc = EtcFiles::defaults(
            &hostname,
            &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
            Some(SLIRP_DNS),
        );
        let netns_path = match &o.pod {
            Some(j) => j.netns.clone(),
            None => {
                let req = crate::network::AttachRequest {
                    container_name: name.clone(),
                    hostname: hostname.clone(),
                    network: o.network.clone(),
                    hosts_path: Some(bundle.join(task::HOSTS_FILE)),
                    ports,
                    direct,
                    aliases: o.network_aliases.clone(),
                };
                let (d2, ns2, id2, more) = (
                    d.clone(),
                    ns.to_string(),
                    id.clone(),
                    o.more_networks.clone(),
                );
                let attached = tokio::task::spawn_blocking(move || {
                    let att = d2.network.attach(&ns2, &id2, &req)?;
                    for (net, aliases) in &more {
                        if let Err(e) = d2.network.connect(&ns2, &id2, net, aliases) {
                            let _ = d2.network.detach(&ns2, &id2);
                            return Err(e);
                        }
                    }
                    // the view again: its /etc/hosts now lists the peers of every network
                    Ok(d2.network.view_of(&ns2, &id2)?.unwrap_or(att))
                })
                .await;
                let att = match attached {
                    Ok(att) => att?,
                    Err(e) => {
                        // a panic part-way skipped attach's own undoing
                        detach_network(d, ns, &id).await;
                        return Err(Error::Internal(format!("attaching the network: {e}")));
                    }
                };
                etc.hosts = att.hosts.clone();
                etc.resolv = att.resolv_conf.clone();
                att.netns_path
            }
        };
        if let Err(e) = self.tasks.prepare_bundle(ns, &id, &etc) {
            detach_network(d, ns, &id).await;
            return Err(e);
        }
        let (d2, ns2, img_name, sn_name, id2) = (
            d.clone(),
            ns.to_string(),
            o.image.clone(),
            o.snapshotter.clone(),
            id.clone(),
        );
        let prepared = tokio::task::spawn_blocking(move || {
            prepare_rootfs(&d2, &ns2, &img_name, &sn_name, &id2, &rootfs2)
        })
        .await;
        let (image_name, image_digest, img_cfg, snapshotter) = match prepared {
            Ok(Ok(p)) => p,
            Err(e) => {
                // a panic part-way: the snapshot may be prepared and mounted
                self.abort_create(ns, &id, &o.snapshotter).await;
                return Err(Error::Internal(format!("preparing the rootfs: {e}")));
            }
            Ok(Err(e)) => {
                let _ = self.tasks.remove_bundle(ns, &id);
                detach_network(d, ns, &id).await;
                return Err(e);
            }
        };

        // image volumes (CRI's): each image read-only, as a view snapshot of its own
        let (d2, ns2, id2, sn2, bundle2, want) = (
            d.clone(),
            ns.to_string(),
            id.clone(),
            snapshotter.clone(),
            bundle.clone(),
            o.image_mounts.clone(),
        );
        let image_volumes = match blocking(move || {
            image_volumes::mount_new(&d2, &ns2, &id2, &sn2, &bundle2, &want)
        })
        .await
        {
            Ok(v) => v,
            Err(e) => {
                self.abort_create(ns, &id, &snapshotter).await;
                return Err(e);
            }
        };
        for (v, source) in &image_volumes {
            binds.push(BindMount {
                source: source.clone(),
                destination: v.destination.clone(),
                read_only: true,
                propagation: "rprivate".into(),
            });
        }

        // the volumes: made when missing (a name used for the first time, `-v /path`),
        // filled from the image when new and empty, then bound like host directories
        // the image's VOLUMEs that no -v or --tmpfs covers get anonymous volumes, as docker's
        for path in &img_cfg.volumes {
            let p = path.trim_end_matches('/');
            let covered = binds
                .iter()
                .any(|b| b.destination.trim_end_matches('/') == p)
                || vols
                    .iter()
                    .any(|v| v.destination.trim_end_matches('/') == p)
                || tmpfs
                    .iter()
                    .any(|t| t.destination.trim_end_matches('/') == p);
            if !covered && p.starts_with('/') && p != "/" {
                vols.push(VolumeMount {
                    name: String::new(),
                    destination: p.to_string(),
                    read_only: false,
                    nocopy: false,
                    anonymous: true,
                });
            }
        }
        let (d2, ns2, rootfs2, want) = (d.clone(), ns.to_string(), rootfs.clone(), vols);
        let mounted = blocking(move || mount_volumes(&d2, &ns2, &rootfs2, want)).await;
        let vols = match mounted {
            Ok(v) => v,
            Err(e) => {
                self.abort_create(ns, &id, &snapshotter).await;
                return Err(e);
            }
        };
        for v in &vols {
            binds.push(BindMount {
                source: d.volumes.mountpoint(ns, &v.name),
                destination: v.destination.clone(),
                read_only: v.read_only,
                propagation: "rprivate".into(),
            });
        }

        let mut so = SpecOptions::new(&id, &rootfs);
        so.args = o.args.clone();
        so.entrypoint = o.entrypoint.clone();
        so.env = o.env.clone();
        so.workdir = Some(o.workdir.clone()).filter(|w| !w.is_empty());
        so.user = Some(o.user.clone()).filter(|u| !u.is_empty());
        so.hostname = Some(o.hostname.clone()).filter(|h| !h.is_empty());
        so.read_only = o.read_only;
        so.tty = o.tty;
        so.binds = binds;
        so.tmpfs = tmpfs;
        so.cap_add = o.cap_add.clone();
        so.cap_drop = o.cap_drop.clone();
        so.ulimits = ulimits;
        so.group_add = o.group_add.clone();
        so.init = init;
        so.privileged = o.privileged;
        so.network = Network::Path(netns_path);
        so.hostname_file = Some(bundle.join(task::HOSTNAME_FILE));
        so.hosts_file = Some(bundle.join(task::HOSTS_FILE));
        so.resolv_file = Some(bundle.join(task::RESOLV_FILE));
        so.binds.extend(o.mounts.iter().cloned());
        so.no_new_privileges |= o.no_new_privileges;
        if let Some(s) = &o.seccomp {
            so.seccomp = s.clone();
        }
        if let Some(j) = &o.pod {
            so.hostname = Some(j.hostname.clone()).filter(|h| !h.is_empty());
            so.hostname_file = Some(j.hostname_file.clone());
            so.hosts_file = Some(j.hosts_file.clone());
            so.resolv_file = Some(j.resolv_file.clone());
        }
        let mut annotations = o.labels.clone();
        annotations.extend(o.annotations.clone());
        so.labels = annotations;
        let built = (|| {
            for opt in &o.security_opt {
                so.apply_security_opt(opt, |p| {
                    o.seccomp_profiles.get(p).cloned().ok_or_else(|| {
                        Error::InvalidArgument(format!(
                            "seccomp profile {p:?} was not sent by the client"
                        ))
                    })
                })?;
            }
            let mut spec = serde_json::to_value(spec::build_spec(&img_cfg, &so)?)?;
            if let Some(j) = &o.pod {
                pod::join_namespaces(&mut spec, j);
            }
            pod::set_paths(&mut spec, &o.masked_paths, &o.readonly_paths);
            o.limits
                .apply(&mut spec, d.cgroups.container_path(&id).as_deref());
            if direct
                && !crate::runtime::seccomp::notify_bind(
                    &mut spec,
                    &crate::shim::direct::listener_path(&bundle),
                )
            {
                return Err(Error::InvalidArgument(
                    "--port-driver direct needs the container's bind(2) calls, but its seccomp profile restricts bind: use --port-driver relay".into(),
                ));
            }
            Ok(spec)
        })();
        let spec = match built {
            Ok(s) => s,
            Err(e) => {
                self.abort_create(ns, &id, &snapshotter).await;
                drop_anonymous(d, ns, &vols);
                return Err(e);
            }
        };
        // -v sources must exist: create missing directories as docker does
        for b in &so.binds {
            if !b.source.exists() {
                if let Err(e) = std::fs::create_dir_all(&b.source) {
                    self.abort_create(ns, &id, &snapshotter).await;
                    drop_anonymous(d, ns, &vols);
                    return Err(Error::io(
                        format!("creating the volume source {}", b.source.display()),
                        e,
                    ));
                }
            }
        }
        let rec = ContainerRecord {
            id: id.clone(),
            name: name.clone(),
            image: image_name,
            image_digest,
            snapshotter: snapshotter.clone(),
            snapshot_key: id.clone(),
            runtime: rt.name.clone(),
            spec,
            labels: o.labels.clone(),
            created_at: now(),
            tty: o.tty,
            stdin: o.stdin,
            auto_remove: o.auto_remove,
            restart_policy,
            restart_count: 0,
            stopped_by_user: false,
            has_been_started: false,
            client: None,
            limits: o.limits.clone(),
            oom_killed: false,
            annotations: o.annotations.clone(),
            pod: o.pod.as_ref().map(|j| j.member.clone()),
            volumes: vols.clone(),
            image_volumes: image_volumes.into_iter().map(|(v, _)| v).collect(),
        };
        let res = d.store.write(|tx| {
            // a volume removed since it was mounted above: the container would hold a
            // directory that is gone
            for v in &vols {
                if tx
                    .get::<crate::volumes::VolumeRecord>(crate::metadata::VOLUMES, ns, &v.name)?
                    .is_none()
                {
                    return Err(Error::Precondition(format!(
                        "volume {:?} was removed while container {name:?} was being created: try again",
                        v.name
                    )));
                }
            }
            // names are unique per namespace: check again inside the transaction
            for (_, r) in tx_list(tx, ns)? {
                if r.name == name {
                    return Err(Error::AlreadyExists(format!(
                        "the container name {name:?} is in use"
                    )));
                }
            }
            tx.put(CONTAINERS, ns, &id, &rec)
        });
        if let Err(e) = res {
            self.abort_create(ns, &id, &snapshotter).await;
            drop_anonymous(d, ns, &vols);
            return Err(e);
        }
        let written = runtime_spec(d, &rec).and_then(|s| self.tasks.write_spec(&bundle, &s));
        if let Err(e) = written {
            let _ = self.remove(ns, &rec, true).await;
            return Err(e);
        }
        d.gc.mutated(false);
        self.events.publish(
            ns,
            "/containers/create",
            &[
                ("id", rec.id.clone()),
                ("name", rec.name.clone()),
                ("image", rec.image.clone()),
                ("runtime", rec.runtime.clone()),
            ],
        );
        Ok(rec)
    }

    /// Records a container a containerd client made: its id, image, snapshot (which the
    /// client prepared) and OCI spec, kept as given. The task is made later from that spec.
    #[allow(clippy::too_many_arguments)]
    pub fn create_from_client(
        &self,
        ns: &str,
        id: &str,
        image: &str,
        snapshotter: &str,
        snapshot_key: &str,
        spec: serde_json::Value,
        labels: BTreeMap<String, String>,
        client: ClientRecord,
    ) -> Result<ContainerRecord> {
        let d = &self.deps;
        validate_name(id)?;
        let rt = plugin::resolve(&d.config, None)?;
        let sn = d.snapshotters.get(Some(snapshotter))?;
        let snapshotter = crate::snapshot::Snapshotter::name(sn.as_ref()).to_string();
        let image_digest = crate::image::get(&d.store, ns, image)
            .map(|i| i.target.digest.to_string())
            .unwrap_or_default();
        let rec = ContainerRecord {
            id: id.to_string(),
            name: id.to_string(),
            image: image.to_string(),
            image_digest,
            snapshotter,
            snapshot_key: snapshot_key.to_string(),
            runtime: rt.name.clone(),
            tty: spec["process"]["terminal"].as_bool().unwrap_or(false),
            stdin: false,
            spec,
            labels,
            created_at: now(),
            auto_remove: false,
            restart_policy: RestartPolicy::default(),
            restart_count: 0,
            stopped_by_user: false,
            has_been_started: false,
            limits: Default::default(),
            oom_killed: false,
            volumes: vec![],
            client: Some(client),
            annotations: BTreeMap::new(),
            pod: None,
            image_volumes: vec![],
        };
        d.store.write(|tx| {
            for (_, r) in tx_list(tx, ns)? {
                if r.name == rec.id || r.id == rec.id {
                    return Err(Error::AlreadyExists(format!(
                        "container {:?} already exists",
                        rec.id
                    )));
                }
            }
            tx.put(CONTAINERS, ns, &rec.id, &rec)
        })?;
        d.gc.mutated(false);
        self.events.publish(
            ns,
            "/containers/create",
            &[
                ("id", rec.id.clone()),
                ("name", rec.name.clone()),
                ("image", rec.image.clone()),
                ("runtime", rec.runtime.clone()),
            ],
        );
        // what of the client's spec rootless nook cannot do is said, not silently dropped
        let notes = adapt_client_spec(&mut rec.spec.clone());
        if !notes.is_empty() {
            for n in &notes {
                tracing::warn!(container = %rec.id, "the client's spec asks for {n}");
            }
            self.events.publish(
                ns,
                "/containers/adapted",
                &[("id", rec.id.clone()), ("changes", notes.join("; "))],
            );
        }
        Ok(rec)
    }

    async fn abort_create(&self, ns: &str, id: &str, snapshotter: &str) {
        let d = &self.deps;
        let rootfs = self.rootfs(ns, id);
        let _ = d.mounts.unmount(&rootfs);
        image_volumes::undo(d, ns, id, snapshotter, &self.tasks.bundle_dir(ns, id));
        if let Ok(sn) = d.snapshotters.get(Some(snapshotter)) {
            let _ = crate::snapshot::Snapshotter::remove(sn.as_ref(), ns, id);
        }
        let _ = self.tasks.remove_bundle(ns, id);
        detach_network(d, ns, id).await;
    }

    fn generate_name(&self, ns: &str) -> Result<String> {
        let taken: Vec<String> = self.records(ns)?.into_iter().map(|r| r.name).collect();
        for _ in 0..100 {
            let a = ADJECTIVES[rand::random_range(0..ADJECTIVES.len())];
            let n = NOUNS[rand::random_range(0..NOUNS.len())];
            let name = format!("{a}_{n}");
            if !taken.contains(&name) {
                return Ok(name);
            }
        }
        Ok(format!("nook_{}", &new_id()[..8]))
    }
}

/// Makes the volumes a new container asks for (a name not seen before, or an anonymous
/// `-v /path`) and copies the image's content at each mount path into a volume that is
/// still empty, unless `nocopy`. Returns the mounts with every name filled in; on failure
/// the anonymous volumes made here are removed again.
fn mount_volumes(
    d: &Deps,
    ns: &str,
    rootfs: &Path,
    want: Vec<VolumeMount>,
) -> Result<Vec<VolumeMount>> {
    let mut out: Vec<VolumeMount> = Vec::new();
    for mut v in want {
        let req = crate::volumes::CreateRequest {
            name: v.name.clone(),
            anonymous: v.anonymous,
            ..Default::default()
        };
        let step = d.volumes.create(ns, &req).and_then(|(vol, _)| {
            v.name = vol.record.name.clone();
            if v.nocopy {
                return Ok(false);
            }
            let src = super::user::resolve_in_root(rootfs, &v.destination);
            d.volumes.copy_up(ns, &v.name, &src)
        });
        if let Err(e) = step {
            if v.anonymous && !v.name.is_empty() {
                out.push(v);
            }
            drop_anonymous(d, ns, &out);
            return Err(e);
        }
        out.push(v);
    }
    Ok(out)
}

/// Removes the anonymous volumes of a creation that failed (no record names them yet).
fn drop_anonymous(d: &Deps, ns: &str, vols: &[VolumeMount]) {
    for v in vols.iter().filter(|v| v.anonymous) {
        let gone = d
            .store
            .write(|tx| crate::volumes::Volumes::delete_record(tx, ns, &v.name));
        if gone.is_ok() {
            let _ = d.volumes.remove_data(ns, &v.name);
        }
    }
}

/// slirp4netns's DNS forwarder, for containers whose host resolv.conf names only loopback
/// servers.
pub const SLIRP_DNS: &str = "10.0.2.3";

/// `-P`: the image's EXPOSEd ports (`80/tcp`) not already published with `-p`, as `-p` values
/// that take any free host port.
fn exposed_ports_to_publish(
    d: &Deps,
    ns: &str,
    image: &str,
    publish: &[String],
) -> Result<Vec<String>> {
    let rec = crate::image::get(&d.store, ns, image)?;
    let Some(img) = crate::image::resolve(
        &d.content,
        &d.store,
        ns,
        &rec.target,
        &crate::image::PlatformSelector::One(crate::image::Platform::host()),
    )?
    .into_iter()
    .next() else {
        return Ok(vec![]);
    };
    let exposed: Vec<String> =
        serde_json::from_slice::<oci_spec::image::ImageConfiguration>(&img.config_bytes)
            .ok()
            .and_then(|c| c.config().as_ref().and_then(|c| c.exposed_ports().clone()))
            .unwrap_or_default();
    let taken = crate::network::ports::parse_all(publish)?;
    let mut out = Vec::new();
    for e in exposed {
        let (port, proto) = e.split_once('/').unwrap_or((&e, "tcp"));
        let spec = format!("{port}/{}", proto.to_ascii_lowercase());
        let Ok(ms) = crate::network::ports::parse(&spec) else {
            continue; // a malformed EXPOSE is skipped, as docker skips it
        };
        if ms.iter().all(|m| {
            taken
                .iter()
                .any(|t| t.container_port == m.container_port && t.proto == m.proto)
        }) {
            continue;
        }
        out.push(spec);
    }
    Ok(out)
}

/// Unpacks the image into the snapshotter, prepares the container's snapshot and mounts it on
/// `rootfs`. Returns (image name, digest, image config, snapshotter name).
fn prepare_rootfs(
    d: &Deps,
    ns: &str,
    image: &str,
    snapshotter: &str,
    id: &str,
    rootfs: &Path,
) -> Result<(String, String, ImageConfig, String)> {
    let rec = crate::image::get(&d.store, ns, image)?;
    let img = crate::image::resolve(
        &d.content,
        &d.store,
        ns,
        &rec.target,
        &crate::image::PlatformSelector::One(crate::image::Platform::host()),
    )?
    .into_iter()
    .next()
    .ok_or_else(|| Error::NotFound(format!("image {image:?} has no manifest for this platform")))?;
    let cfg: ImageConfig =
        serde_json::from_slice::<oci_spec::image::ImageConfiguration>(&img.config_bytes)
            .ok()
            .and_then(|c| c.config().as_ref().map(ImageConfig::from))
            .unwrap_or_default();
    let sn_opt = Some(snapshotter).filter(|s| !s.is_empty());
    let unpacked = crate::image::unpack::unpack_image(
        &d.content,
        &d.store,
        &d.snapshotters,
        ns,
        image,
        sn_opt,
        &crate::image::PlatformSelector::One(crate::image::Platform::host()),
    )?;
    let sn = d.snapshotters.get(Some(&unpacked.snapshotter))?;
    let mut labels = BTreeMap::new();
    labels.insert("nook.container".to_string(), id.to_string());
    let mounts = crate::snapshot::Snapshotter::prepare(
        sn.as_ref(),
        ns,
        id,
        Some(&unpacked.chain_id),
        labels,
    )?;
    std::fs::create_dir_all(rootfs)
        .map_err(|e| Error::io(format!("creating {}", rootfs.display()), e))?;
    if let Err(e) = d.mounts.mount_all(&mounts, rootfs) {
        let _ = crate::snapshot::Snapshotter::remove(sn.as_ref(), ns, id);
        return Err(e);
    }
    Ok((
        rec.name.clone(),
        rec.target.digest.to_string(),
        cfg,
        unpacked.snapshotter,
    ))
}
