//! OpenAPI schemas of the kipam-core types that travel on the wire unchanged.
//!
//! kipam-core is pure logic and knows nothing of OpenAPI, so it derives no `ToSchema`.
//! The structs here mirror its serde shapes field for field, exist only to be described
//! in the OpenAPI document, and are never constructed; the wire types point at them with
//! `#[schema(value_type = ...)]`. A unit test serializes the real types and checks that
//! every key they write is a property here, so a change in kipam-core that is not
//! mirrored fails the build's tests instead of silently drifting.

#![allow(dead_code)]

use std::collections::BTreeMap;

use utoipa::ToSchema;

/// An address family.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum Family {
    /// IPv4.
    Ipv4,
    /// IPv6.
    Ipv6,
}

/// What a pool's addresses are for.
#[derive(ToSchema)]
#[schema(rename_all = "kebab-case")]
pub enum Purpose {
    /// Pod addresses.
    Pod,
    /// Service cluster IPs.
    Service,
    /// LoadBalancer addresses.
    LoadBalancer,
    /// Node pod-CIDRs (prefix leases).
    NodeCidr,
    /// Anything else (the default).
    Generic,
}

/// An inclusive range of addresses of one family.
#[derive(ToSchema)]
pub struct AddrRange {
    /// First address.
    #[schema(example = "10.0.0.10")]
    first: String,
    /// Last address (inclusive).
    #[schema(example = "10.0.0.20")]
    last: String,
}

/// A pool's configuration: the body of `POST /v1/pools`. Unknown fields are refused.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct PoolConfig {
    /// Unique name: 1 to 253 printable ASCII characters without spaces.
    #[schema(example = "pods-v4")]
    name: String,
    /// The CIDR (host bits must be zero).
    #[schema(example = "10.244.0.0/16")]
    cidr: String,
    /// What the addresses are for (default `generic`).
    #[schema(nullable = false)]
    purpose: Option<Purpose>,
    /// Address space; overlaps are refused within a scope (default `default`).
    #[schema(nullable = false)]
    scope: Option<String>,
    /// Block size as a prefix length (default /26 for IPv4, /122 for IPv6).
    #[schema(nullable = false, minimum = 0, maximum = 128)]
    block_prefix_length: Option<u8>,
    /// Addresses never handed out.
    #[schema(nullable = false)]
    exclusions: Option<Vec<AddrRange>>,
    /// The gateway, never handed out.
    #[schema(nullable = false)]
    gateway: Option<String>,
    /// Seconds a released address waits before dynamic reuse (default 30; 0: none).
    #[schema(nullable = false, minimum = 0)]
    reuse_delay_seconds: Option<u64>,
    /// Most blocks one node may claim (then it borrows, unless strict).
    #[schema(nullable = false, minimum = 0)]
    max_blocks_per_node: Option<u32>,
    /// Never hand out addresses from another node's blocks (default false).
    #[schema(nullable = false)]
    strict_affinity: Option<bool>,
    /// Seconds an empty block stays with its node (default 300).
    #[schema(nullable = false, minimum = 0)]
    empty_block_grace_seconds: Option<u64>,
}

/// A JSON merge patch (RFC 7386) of a pool's configuration: `PATCH /v1/pools/{name}`.
/// Fields left out keep their value; `name` and `cidr`, if given, must not change.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct PoolPatch {
    /// Must equal the pool's name if given.
    name: Option<String>,
    /// Must equal the pool's CIDR if given.
    cidr: Option<String>,
    /// What the addresses are for.
    purpose: Option<Purpose>,
    /// Address space.
    scope: Option<String>,
    /// Block size as a prefix length.
    #[schema(minimum = 0, maximum = 128)]
    block_prefix_length: Option<u8>,
    /// Addresses never handed out.
    exclusions: Option<Vec<AddrRange>>,
    /// The gateway.
    gateway: Option<String>,
    /// Seconds a released address waits before dynamic reuse.
    #[schema(minimum = 0)]
    reuse_delay_seconds: Option<u64>,
    /// Most blocks one node may claim.
    #[schema(minimum = 0)]
    max_blocks_per_node: Option<u32>,
    /// Never hand out addresses from another node's blocks.
    strict_affinity: Option<bool>,
    /// Seconds an empty block stays with its node.
    #[schema(minimum = 0)]
    empty_block_grace_seconds: Option<u64>,
}

/// A network used outside kipam (VPC, on-prem, VPN): never allocated, checked for overlap.
#[derive(ToSchema)]
pub struct ScopeNetwork {
    /// Unique name: 1 to 253 printable ASCII characters without spaces.
    #[schema(example = "office-vpn")]
    name: String,
    /// The network (host bits must be zero).
    #[schema(example = "192.168.0.0/16")]
    cidr: String,
    /// Scope (default `default`).
    #[schema(nullable = false)]
    scope: Option<String>,
    /// Free text (owner, site, provider).
    #[schema(nullable = false)]
    description: Option<String>,
}

/// Free-form string attributes.
#[derive(ToSchema)]
pub struct Attrs(BTreeMap<String, String>);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeSet;

    use utoipa::PartialSchema;
    use utoipa::openapi::{RefOr, Schema};

    fn props<T: PartialSchema>() -> BTreeSet<String> {
        match T::schema() {
            RefOr::T(Schema::Object(o)) => o.properties.keys().cloned().collect(),
            other => panic!(
                "not an object schema: {}",
                serde_json::to_string(&other).unwrap()
            ),
        }
    }

    fn keys(v: &serde_json::Value) -> BTreeSet<String> {
        v.as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    }

    #[test]
    fn pool_config_mirror_matches_kipam_core() {
        let mut c = kipam_core::PoolConfig::new("p", "10.0.0.0/24".parse().unwrap());
        c.block_prefix_length = Some(28);
        c.gateway = Some("10.0.0.1".parse().unwrap());
        c.max_blocks_per_node = Some(2);
        c.exclusions = vec![
            kipam_core::AddrRange::new("10.0.0.5".parse().unwrap(), "10.0.0.6".parse().unwrap())
                .unwrap(),
        ];
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(keys(&json), props::<super::PoolConfig>());
        assert_eq!(keys(&json), props::<super::PoolPatch>());
        assert_eq!(keys(&json["exclusions"][0]), props::<super::AddrRange>());
    }

    #[test]
    fn scope_network_mirror_matches_kipam_core() {
        let n = kipam_core::ScopeNetwork {
            name: "n".into(),
            cidr: "10.0.0.0/8".parse().unwrap(),
            scope: "s".into(),
            description: "d".into(),
        };
        let json = serde_json::to_value(&n).unwrap();
        assert_eq!(keys(&json), props::<super::ScopeNetwork>());
    }

    #[test]
    fn enum_mirrors_match_kipam_core() {
        use kipam_core::{Family, Purpose};
        let names = |s: RefOr<Schema>| serde_json::to_value(s).unwrap()["enum"].clone();
        let fam = serde_json::json!([Family::Ipv4, Family::Ipv6]);
        assert_eq!(names(<super::Family as PartialSchema>::schema()), fam);
        let purposes = serde_json::json!([
            Purpose::Pod,
            Purpose::Service,
            Purpose::LoadBalancer,
            Purpose::NodeCidr,
            Purpose::Generic
        ]);
        assert_eq!(names(<super::Purpose as PartialSchema>::schema()), purposes);
    }
}
