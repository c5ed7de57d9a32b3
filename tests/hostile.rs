//! Hostile and malformed API requests, sent straight over the socket with the crate's generated
//! gRPC clients (not the CLI, which validates first): oversized requests get a clean error and
//! nookd keeps serving; invalid names, references and digests get InvalidArgument.

mod common;

use common::Nookd;
use nook::cli::client::Client;
use nook::proto::{containers as cpb, content as ctpb, images as ipb, leases as lpb};
use tonic::Code;

async fn client(d: &Nookd, ns: &str) -> Client {
    Client::connect(Some(d.address.clone()), ns).await.unwrap()
}

/// 17 MiB: over the 16 MiB request limit.
fn huge() -> String {
    "x".repeat(17 << 20)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_are_refused_and_nookd_keeps_serving() {
    let d = Nookd::start();
    let c = client(&d, "default").await;
    let mut images = ipb::images_client::ImagesClient::new(c.channel.clone());
    let mut containers = cpb::containers_client::ContainersClient::new(c.channel.clone());

    let e = images
        .tag(c.req(ipb::TagImageRequest {
            source: huge(),
            target: "x:1".into(),
        }))
        .await
        .unwrap_err();
    eprintln!("oversized: {:?} {}", e.code(), e.message());
    assert!(
        matches!(e.code(), Code::ResourceExhausted | Code::OutOfRange),
        "{e:?}"
    );
    let mut labels = std::collections::HashMap::new();
    labels.insert("big".to_string(), huge());
    let e = containers
        .create(c.req(cpb::CreateRequest {
            image: "busybox".into(),
            labels,
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert!(
        matches!(e.code(), Code::ResourceExhausted | Code::OutOfRange),
        "{e:?}"
    );
    // one huge message inside a stream
    let e = images
        .import(c.req(tokio_stream::iter(vec![ipb::ImportRequest {
            data: vec![0u8; 17 << 20],
            base_name: String::new(),
        }])))
        .await
        .unwrap_err();
    assert!(
        matches!(e.code(), Code::ResourceExhausted | Code::OutOfRange),
        "{e:?}"
    );

    // just under the limit: a well-formed request with a 15 MiB label is refused for what it is
    let mut labels = std::collections::HashMap::new();
    labels.insert("big".to_string(), "y".repeat(15 << 20));
    let e = containers
        .create(c.req(cpb::CreateRequest {
            image: "busybox".into(),
            labels,
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    // still serving, on the same connection and on new ones
    let l = images
        .list(c.req(ipb::ListImagesRequest::default()))
        .await
        .unwrap();
    assert!(l.into_inner().images.is_empty());
    d.nook(&["version"]).ok();
    d.nook(&["ps", "-a"]).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_names_references_and_digests_are_invalid_argument() {
    let d = Nookd::start();
    let c = client(&d, "default").await;
    let mut images = ipb::images_client::ImagesClient::new(c.channel.clone());
    let mut containers = cpb::containers_client::ContainersClient::new(c.channel.clone());
    let mut content = ctpb::content_client::ContentClient::new(c.channel.clone());
    let mut leases = lpb::leases_client::LeasesClient::new(c.channel.clone());
    let inval = |r: Result<_, tonic::Status>, what: &str| {
        let e = r.err().unwrap_or_else(|| panic!("{what}: accepted"));
        assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e:?}");
        assert!(
            !e.message().is_empty() && !e.message().contains('\n'),
            "{what}: {e:?}"
        );
    };

    for bad in [
        "",
        "Not/Valid",
        "a b",
        "x:",
        "@sha256:abc",
        "a:b:c:d",
        "\u{0}",
        &"a/".repeat(200),
    ] {
        inval(
            images
                .pull(c.req(ipb::PullRequest {
                    reference: bad.into(),
                    ..Default::default()
                }))
                .await
                .map(|_| ()),
            &format!("pull {bad:?}"),
        );
        inval(
            images
                .tag(c.req(ipb::TagImageRequest {
                    source: "x:1".into(),
                    target: bad.into(),
                }))
                .await
                .map(|_| ()),
            &format!("tag to {bad:?}"),
        );
    }
    for bad in [
        "",
        "sha256:abc",
        "md5:00",
        "sha256:ZZ",
        "sha256",
        &format!("sha256:{}", "A".repeat(64)),
    ] {
        inval(
            content
                .info(c.req(ctpb::InfoRequest { digest: bad.into() }))
                .await
                .map(|_| ()),
            &format!("content info {bad:?}"),
        );
        inval(
            images
                .pull(c.req(ipb::PullRequest {
                    reference: format!("busybox@{bad}"),
                    ..Default::default()
                }))
                .await
                .map(|_| ()),
            &format!("pull by digest {bad:?}"),
        );
    }
    for bad in ["a b", "../x", "-x", &"n".repeat(300), "x/y"] {
        inval(
            containers
                .create(c.req(cpb::CreateRequest {
                    image: "busybox".into(),
                    name: bad.into(),
                    ..Default::default()
                }))
                .await
                .map(|_| ()),
            &format!("container name {bad:?}"),
        );
    }
    inval(
        containers
            .create(c.req(cpb::CreateRequest {
                image: "Bad Image".into(),
                ..Default::default()
            }))
            .await
            .map(|_| ()),
        "container image",
    );
    inval(
        leases
            .create(c.req(lpb::CreateLeaseRequest {
                id: "bad id/..".into(),
                ..Default::default()
            }))
            .await
            .map(|_| ()),
        "lease id",
    );
    // an invalid namespace in the request metadata
    let bad_ns = client(&d, "../etc").await;
    let e = ipb::images_client::ImagesClient::new(bad_ns.channel.clone())
        .list(bad_ns.req(ipb::ListImagesRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    d.nook(&["version"]).ok();
}
