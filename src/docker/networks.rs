//! `/networks/*`: create, list, inspect, remove, connect, disconnect, prune, and the network
//! part of a container's JSON. nook's networks are Docker's bridge networks: nook's default
//! network is Docker's `bridge`, `host` and `none` are the pre-defined pseudo-networks. The
//! network subsystem does the work; connect and disconnect go through the containers service,
//! as `nook network connect` does.

use std::collections::{BTreeMap, HashMap};

use hyper::{Method, StatusCode};
use serde_json::{json, Map, Value};
use sha2::Digest;

use super::{empty, json as json_resp, no_route, ok_json, ApiError, Req, Res, NS};
use crate::daemon::Daemon;
use crate::network::ipam::Subnet;
use crate::network::manager::{AttachmentRecord, Mode, NetworkInfo, DEFAULT_NETWORK};

/// Docker's name of nook's default network.
const BRIDGE: &str = "bridge";
/// The pre-defined networks besides `bridge`.
const PSEUDO: [(&str, &str); 2] = [("host", "host"), ("none", "null")];

/// The Docker name of a nook network.
pub fn docker_name(n: &str) -> &str {
    if n == DEFAULT_NETWORK {
        BRIDGE
    } else {
        n
    }
}

/// A stable 64-hex id: of a network (its name and creation time), or of a pseudo-network.
fn hex_id(seed: &str) -> String {
    hex::encode(sha2::Sha256::digest(seed.as_bytes()))
}

fn network_id(name: &str, created_at: i64) -> String {
    hex_id(&format!("nook-network/{name}/{created_at}"))
}

fn pseudo_id(name: &str) -> String {
    hex_id(&format!("nook-network/{name}"))
}

pub async fn route(mut r: Req) -> Res {
    let n = r.segs.len();
    match (r.method.clone(), n, r.seg(1).to_string()) {
        (Method::GET, 1, _) => list(&r).await,
        (Method::POST, 2, s) if s == "create" => create(&mut r).await,
        (Method::POST, 2, s) if s == "prune" => prune(&r).await,
        (Method::GET, 2, id) => inspect(&r, &id).await,
        (Method::DELETE, 2, id) => remove(&r, &id).await,
        (Method::POST, 3, id) if r.seg(2) == "connect" => connect(&mut r, &id).await,
        (Method::POST, 3, id) if r.seg(2) == "disconnect" => disconnect(&mut r, &id).await,
        _ => Err(no_route(&r)),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal error: {e}"),
        )
    })?
}

/// A network as the Docker door sees it: a nook network, or a pseudo-network.
enum Net {
    Nook(Box<NetworkInfo>),
    Pseudo(&'static str, &'static str),
}

impl Net {
    fn name(&self) -> &str {
        match self {
            Net::Nook(i) => docker_name(&i.record.name),
            Net::Pseudo(n, _) => n,
        }
    }
    fn id(&self) -> String {
        match self {
            Net::Nook(i) => network_id(&i.record.name, i.record.created_at),
            Net::Pseudo(n, _) => pseudo_id(n),
        }
    }
    fn driver(&self) -> &str {
        match self {
            Net::Nook(_) => "bridge",
            Net::Pseudo(_, d) => d,
        }
    }
    fn builtin(&self) -> bool {
        match self {
            Net::Nook(i) => i.default,
            Net::Pseudo(..) => true,
        }
    }
    fn members(&self) -> usize {
        match self {
            Net::Nook(i) => i.members.iter().filter(|m| m.0 == NS).count(),
            Net::Pseudo(..) => 0,
        }
    }
    fn labels(&self) -> BTreeMap<String, String> {
        match self {
            Net::Nook(i) => i.record.labels.clone(),
            Net::Pseudo(..) => BTreeMap::new(),
        }
    }

    fn to_json(&self) -> Value {
        let (created, ipam, containers, options, ipv6) = match self {
            Net::Nook(i) => {
                let r = &i.record;
                let mut cfg = vec![
                    json!({ "Subnet": r.subnet.to_string(), "Gateway": r.gateway.to_string() }),
                ];
                if let Some(s6) = r.subnet6 {
                    cfg.push(
                        json!({ "Subnet": s6.to_string(), "Gateway": s6.gateway().to_string() }),
                    );
                }
                let mut cs = Map::new();
                for (ns, id, name, ip) in &i.members {
                    if ns != NS {
                        continue;
                    }
                    cs.insert(
                        id.clone(),
                        json!({
                            "Name": name,
                            "EndpointID": endpoint_id(id, &r.name),
                            "MacAddress": "",
                            "IPv4Address": format!("{ip}/{}", r.subnet.prefix),
                            "IPv6Address": "",
                        }),
                    );
                }
                (
                    r.created_at,
                    cfg,
                    cs,
                    json!({ "com.docker.network.bridge.name": r.bridge }),
                    r.subnet6.is_some(),
                )
            }
            Net::Pseudo(..) => (0, Vec::new(), Map::new(), json!({}), false),
        };
        json!({
            "Name": self.name(),
            "Id": self.id(),
            "Created": super::docker_time(created),
            "Scope": "local",
            "Driver": self.driver(),
            "EnableIPv4": true,
            "EnableIPv6": ipv6,
            "IPAM": { "Driver": "default", "Options": null, "Config": ipam },
            "Internal": false,
            "Attachable": false,
            "Ingress": false,
            "ConfigFrom": { "Network": "" },
            "ConfigOnly": false,
            "Containers": containers,
            "Options": options,
            "Labels": self.labels(),
        })
    }
}

fn endpoint_id(container: &str, network: &str) -> String {
    hex_id(&format!("nook-endpoint/{container}/{network}"))
}

/// Every network, the default first, then the pseudo-networks.
fn all(d: &Daemon) -> Result<Vec<Net>, ApiError> {
    let mut v: Vec<Net> = d
        .network
        .list()?
        .into_iter()
        .map(|i| Net::Nook(Box::new(i)))
        .collect();
    v.extend(PSEUDO.iter().map(|(n, dr)| Net::Pseudo(n, dr)));
    Ok(v)
}

/// A network by name, full id or unique id prefix.
fn find(d: &Daemon, what: &str) -> Result<Net, ApiError> {
    let mut nets = all(d)?;
    if let Some(i) = nets.iter().position(|n| {
        n.name() == what
            || n.id() == what
            || (what == DEFAULT_NETWORK && n.builtin() && n.driver() == "bridge")
    }) {
        return Ok(nets.swap_remove(i));
    }
    let m: Vec<usize> = (0..nets.len())
        .filter(|i| !what.is_empty() && nets[*i].id().starts_with(what))
        .collect();
    match m.as_slice() {
        [i] => Ok(nets.swap_remove(*i)),
        [] => Err(ApiError::not_found(format!("network {what} not found"))),
        _ => Err(ApiError::bad(format!(
            "network {what} is ambiguous ({} matches): give more of the id",
            m.len()
        ))),
    }
}

/// The nook name of a Docker network reference (a user or the default network).
fn nook_network(d: &Daemon, what: &str) -> Result<String, ApiError> {
    match find(d, what)? {
        Net::Nook(i) => Ok(i.record.name),
        Net::Pseudo(n, _) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("{n} is a pre-defined network: a container joins it only when it is created (--network {n})"),
        )),
    }
}

async fn list(r: &Req) -> Res {
    let f = r.filters()?;
    for k in f.keys() {
        if !["name", "id", "label", "driver", "dangling", "type", "scope"].contains(&k.as_str()) {
            return Err(ApiError::bad(format!(
                "invalid filter '{k}' (nook serves name, id, label, driver, dangling, type, scope)"
            )));
        }
    }
    let d = r.d.clone();
    let nets = blocking(move || all(&d)).await?;
    let any = |k: &str, ok: &dyn Fn(&str) -> bool| f.get(k).is_none_or(|w| w.iter().any(|x| ok(x)));
    let mut out = Vec::new();
    for n in nets {
        let labels = n.labels();
        let keep = any("name", &|w| n.name().contains(w))
            && any("id", &|w| n.id().starts_with(w))
            && any("driver", &|w| n.driver() == w)
            && any("scope", &|w| w == "local")
            && any("type", &|w| (w == "builtin") == n.builtin())
            && any("dangling", &|w| {
                (matches!(w, "1" | "true")) == (n.members() == 0 && !n.builtin())
            })
            && f.get("label").is_none_or(|ls| {
                ls.iter().all(|l| match l.split_once('=') {
                    Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
                    None => labels.contains_key(l),
                })
            });
        if keep {
            out.push(n.to_json());
        }
    }
    ok_json(&out)
}

async fn inspect(r: &Req, id: &str) -> Res {
    let (d, id) = (r.d.clone(), id.to_string());
    let n = blocking(move || find(&d, &id)).await?;
    ok_json(&n.to_json())
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

fn set(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        Value::Number(n) => n.as_f64() != Some(0.0),
    }
}

/// The subnet a create request asks for, checked against what nook can give: one IPv4
/// subnet, its gateway the first address, no ranges or auxiliary addresses.
fn requested_subnet(ipam: &Value) -> Result<Option<String>, ApiError> {
    if !matches!(s(&ipam["Driver"]), "" | "default") {
        return Err(ApiError::unsupported(&format!(
            "IPAM.Driver={:?} (nook has its own address management: use \"default\")",
            s(&ipam["Driver"])
        )));
    }
    if set(&ipam["Options"]) {
        return Err(ApiError::unsupported("IPAM.Options"));
    }
    let cfgs = ipam["Config"].as_array().cloned().unwrap_or_default();
    if cfgs.len() > 1 {
        return Err(ApiError::unsupported(
            "IPAM.Config with several subnets (nook gives a network one IPv4 subnet)",
        ));
    }
    let Some(c) = cfgs.first() else {
        return Ok(None);
    };
    for k in ["AuxiliaryAddresses", "AuxAddress"] {
        if set(&c[k]) {
            return Err(ApiError::unsupported(&format!("IPAM.Config.{k}")));
        }
    }
    let subnet = s(&c["Subnet"]);
    if subnet.contains(':') {
        return Err(ApiError::unsupported(
            "an IPv6 subnet in IPAM.Config (nook gives networks IPv6 from [network] ipv6_subnet in config.toml)",
        ));
    }
    if subnet.is_empty() {
        if set(&c["Gateway"]) || set(&c["IPRange"]) {
            return Err(ApiError::bad(
                "IPAM.Config.Gateway and IPRange need a Subnet (--subnet)",
            ));
        }
        return Ok(None);
    }
    let sn = Subnet::parse(subnet)?;
    let ip_range = s(&c["IPRange"]);
    if !ip_range.is_empty() && ip_range != subnet {
        return Err(ApiError::unsupported(
            "IPAM.Config.IPRange (--ip-range: nook hands out the whole subnet)",
        ));
    }
    let gw = s(&c["Gateway"]);
    if !gw.is_empty() && gw != sn.gateway().to_string() {
        return Err(ApiError::unsupported(&format!(
            "IPAM.Config.Gateway={gw} (nook's gateway is the subnet's first address, {})",
            sn.gateway()
        )));
    }
    Ok(Some(subnet.to_string()))
}

async fn create(r: &mut Req) -> Res {
    let body: Value = r.json().await?;
    let name = s(&body["Name"]).to_string();
    if name.is_empty() {
        return Err(ApiError::bad("a network needs a Name"));
    }
    if !matches!(s(&body["Driver"]), "" | "bridge") {
        return Err(ApiError::unsupported(&format!(
            "Driver={:?} (nook has bridge networks only)",
            s(&body["Driver"])
        )));
    }
    if !matches!(s(&body["Scope"]), "" | "local") {
        return Err(ApiError::unsupported(&format!(
            "Scope={:?}",
            s(&body["Scope"])
        )));
    }
    let ipv6_on = !r.d.network.settings().subnet6.trim().is_empty();
    if body["EnableIPv6"].as_bool() == Some(true) && !ipv6_on {
        return Err(ApiError::unsupported(
            "EnableIPv6 (--ipv6) with IPv6 off: nook gives every network IPv6 when [network] ipv6_subnet is set in config.toml, not per network",
        ));
    }

    if body["EnableIPv4"].as_bool() == Some(false) {
        return Err(ApiError::unsupported(
            "EnableIPv4=false (IPv6-only networks)",
        ));
    }
    for k in ["Internal", "Ingress", "ConfigOnly"] {
        if set(&body[k]) {
            return Err(ApiError::unsupported(k));
        }
    }
    if set(&body["ConfigFrom"]["Network"]) {
        return Err(ApiError::unsupported("ConfigFrom"));
    }
    if let Some(o) = body["Options"].as_object() {
        if let Some(k) = o.keys().next() {
            return Err(ApiError::unsupported(&format!(
                "the driver option {k:?} (-o)"
            )));
        }
    }
    let subnet = requested_subnet(&body["IPAM"])?;
    let labels: BTreeMap<String, String> = body["Labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), s(v).to_string()))
                .collect()
        })
        .unwrap_or_default();
    if [BRIDGE, "host", "none"].contains(&name.as_str()) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("{name} is a pre-defined network and cannot be created"),
        ));
    }
    let d = r.d.clone();
    let rec = blocking(move || {
        d.network
            .create(&name, subnet.as_deref(), labels)
            .map_err(|e| match e {
                crate::error::Error::AlreadyExists(_) => {
                    ApiError::conflict(format!("network with name {name} already exists"))
                }
                e => e.into(),
            })
    })
    .await?;
    Ok(json_resp(
        StatusCode::CREATED,
        &json!({ "Id": network_id(&rec.name, rec.created_at), "Warning": "" }),
    ))
}

async fn remove(r: &Req, id: &str) -> Res {
    let (d, id) = (r.d.clone(), id.to_string());
    blocking(move || match find(&d, &id)? {
        Net::Nook(i) if !i.default => Ok(d.network.remove(&i.record.name)?),
        n => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "{} is a pre-defined network and cannot be removed",
                n.name()
            ),
        )),
    })
    .await?;
    empty(StatusCode::NO_CONTENT)
}

async fn connect(r: &mut Req, id: &str) -> Res {
    let body: Value = r.json().await?;
    let ep = &body["EndpointConfig"];
    for k in ["IPAMConfig", "Links", "MacAddress", "DriverOpts"] {
        if set(&ep[k]) {
            return Err(ApiError::unsupported(&format!("EndpointConfig.{k}")));
        }
    }
    let aliases: Vec<String> = ep["Aliases"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let (d, id) = (r.d.clone(), id.to_string());
    let net = blocking(move || nook_network(&d, &id)).await?;
    let c = super::containers::find(&r.d, s(&body["Container"]))?;
    let svc = r.d.container_service().cloned().map_err(ApiError::from)?;
    // Docker adds the short id as an alias itself: nothing to keep
    let short: String = c.id.chars().take(12).collect();
    let aliases = aliases.into_iter().filter(|a| *a != short).collect();
    svc.connect(NS, &c, &net, aliases).await?;
    empty(StatusCode::OK)
}

async fn disconnect(r: &mut Req, id: &str) -> Res {
    let body: Value = r.json().await?;
    let (d, id) = (r.d.clone(), id.to_string());
    let net = blocking(move || nook_network(&d, &id)).await?;
    let c = super::containers::find(&r.d, s(&body["Container"]))?;
    let svc = r.d.container_service().cloned().map_err(ApiError::from)?;
    svc.disconnect(NS, &c, &net).await?;
    empty(StatusCode::OK)
}

async fn prune(r: &Req) -> Res {
    let f = r.filters()?;
    for k in f.keys() {
        if !["label", "label!"].contains(&k.as_str()) {
            return Err(ApiError::bad(format!(
                "invalid filter '{k}' (nook's network prune serves label and label!)"
            )));
        }
    }
    let d = r.d.clone();
    let removed = blocking(move || {
        let matches = |labels: &BTreeMap<String, String>, l: &str| match l.split_once('=') {
            Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
            None => labels.contains_key(l),
        };
        let mut removed = Vec::new();
        for i in d.network.list()? {
            let l = &i.record.labels;
            if i.default
                || !i.members.is_empty()
                || !f
                    .get("label")
                    .is_none_or(|ls| ls.iter().all(|x| matches(l, x)))
                || f.get("label!")
                    .is_some_and(|ls| ls.iter().any(|x| matches(l, x)))
            {
                continue;
            }
            match d.network.remove(&i.record.name) {
                Ok(()) => removed.push(i.record.name),
                Err(e) => tracing::warn!("network prune: {e}"),
            }
        }
        Ok(removed)
    })
    .await?;
    ok_json(&json!({ "NetworksDeleted": removed }))
}

/// A container's `NetworkSettings.Networks` and its `HostConfig.NetworkMode`, from its
/// attachment. API versions before 1.45 list the short id among the aliases, as dockerd did
/// (docker-compose 1.29 looks for it before it reconnects a container).
pub fn container_networks(
    d: &Daemon,
    a: Option<&AttachmentRecord>,
    id: &str,
    name: &str,
    version: (u32, u32),
) -> (Map<String, Value>, String) {
    let mut nets = Map::new();
    let Some(a) = a else {
        return (nets, "none".into());
    };
    let short: String = id.chars().take(12).collect();
    let ids: HashMap<String, String> = d
        .network
        .list()
        .map(|v| {
            v.into_iter()
                .map(|i| {
                    let id = network_id(&i.record.name, i.record.created_at);
                    (i.record.name, id)
                })
                .collect()
        })
        .unwrap_or_default();
    let mut first = true;
    let mut mode = String::new();
    for (net, ip, aliases) in a.endpoints() {
        let prim = first && a.mode == Mode::Bridge;
        first = false;
        let (prefix, gw) = if prim {
            (
                a.prefix,
                a.gateway.map(|g| g.to_string()).unwrap_or_default(),
            )
        } else {
            a.extra
                .iter()
                .find(|e| e.network == net)
                .map(|e| (e.prefix, e.gateway.to_string()))
                .unwrap_or_default()
        };
        let mut al = aliases.clone();
        if version < (1, 45) {
            al.push(short.clone());
        }
        let mut dns = vec![name.to_string()];
        dns.extend(aliases);
        dns.push(short.clone());
        if mode.is_empty() {
            mode = docker_name(&net).to_string();
        }
        nets.insert(
            docker_name(&net).to_string(),
            json!({
                "IPAMConfig": null, "Links": null, "Aliases": al, "MacAddress": "",
                "DriverOpts": null, "NetworkID": ids.get(&net).cloned().unwrap_or_default(),
                "EndpointID": endpoint_id(id, &net), "Gateway": gw, "IPAddress": ip.to_string(),
                "IPPrefixLen": prefix, "IPv6Gateway": "", "GlobalIPv6Address": "",
                "GlobalIPv6PrefixLen": 0, "DNSNames": dns,
            }),
        );
    }
    if nets.is_empty() {
        let n = if a.mode == Mode::Host { "host" } else { "none" };
        nets.insert(
            n.into(),
            json!({
                "IPAMConfig": null, "Links": null, "Aliases": null, "MacAddress": "",
                "NetworkID": pseudo_id(n), "EndpointID": endpoint_id(id, n), "Gateway": "",
                "IPAddress": "", "IPPrefixLen": 0, "IPv6Gateway": "", "GlobalIPv6Address": "",
                "GlobalIPv6PrefixLen": 0,
            }),
        );
        mode = n.into();
    }
    (nets, mode)
}
