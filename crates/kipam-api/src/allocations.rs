//! Allocations on the wire: the allocate request (what the CNI plugin and other clients
//! send), its conversion to the engine's [`AllocRequest`], and the views of a handle.
//!
//! A request names a handle (for CNI `<network>/<containerID>/<ifname>`), a node, free
//! attributes and the pod, and one entry per address wanted. All entries are granted or
//! none (dual-stack is two entries). Asking again for a handle that holds addresses
//! returns them unchanged.

use std::collections::BTreeMap;
use std::net::IpAddr;

use kipam_core::{AllocRequest, Family, Handle, HeldAddr, Purpose, Source, Want};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// The attribute keys the `pod` object of a request is recorded under.
pub const POD_NAMESPACE: &str = "k8s.pod.namespace";
/// See [`POD_NAMESPACE`].
pub const POD_NAME: &str = "k8s.pod.name";
/// See [`POD_NAMESPACE`].
pub const POD_UID: &str = "k8s.pod.uid";

fn default_node() -> String {
    "default".into()
}

/// The pod an allocation is for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PodRef {
    /// Namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// UID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// One address wanted. Give `pools` (tried in order), or `family` (any pool of that
/// family, and `purpose` if given, in name order). With `address` alone the family is the
/// address's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddressRequest {
    /// Pools to take the address from, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pools: Option<Vec<String>>,
    /// Any pool of this family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::schema::Family>)]
    pub family: Option<Family>,
    /// With `family`: only pools of this purpose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::schema::Purpose>)]
    pub purpose: Option<Purpose>,
    /// This exact address (a static request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "10.244.1.7")]
    pub address: Option<IpAddr>,
}

/// `POST /v1/allocations`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AllocateRequest {
    /// The owner key (for CNI `<network>/<containerID>/<ifname>`).
    #[schema(example = "net1/3f2a9c/eth0")]
    pub handle: String,
    /// The node asking (default `default`).
    #[serde(default = "default_node")]
    pub node: String,
    /// Free attributes recorded on the handle.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attrs: BTreeMap<String, String>,
    /// The pod; recorded as attributes `k8s.pod.namespace`, `k8s.pod.name`, `k8s.pod.uid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRef>,
    /// One entry per address; all are granted or none.
    pub requests: Vec<AddressRequest>,
}

/// A request field that cannot be turned into an engine request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct FieldError {
    /// The field, as written in the request (`requests[1].family`).
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

impl AllocateRequest {
    /// A request for one address from each of `pools` (in order: one want per pool).
    pub fn from_pools(handle: &str, node: &str, pools: &[&str]) -> AllocateRequest {
        AllocateRequest {
            handle: handle.into(),
            node: node.into(),
            attrs: BTreeMap::new(),
            pod: None,
            requests: pools
                .iter()
                .map(|p| AddressRequest {
                    pools: Some(vec![(*p).to_string()]),
                    ..AddressRequest::default()
                })
                .collect(),
        }
    }

    /// The engine's request. Checks what only the wire knows (shape of `requests`, pod
    /// attributes); names, pools and addresses are checked by the engine.
    pub fn to_core(&self) -> Result<AllocRequest, FieldError> {
        let bad = |field: String, reason: &str| FieldError {
            field,
            reason: reason.to_string(),
        };
        if self.requests.is_empty() {
            return Err(bad("requests".into(), "ask for at least one address"));
        }
        let mut wants = Vec::with_capacity(self.requests.len());
        for (i, r) in self.requests.iter().enumerate() {
            let at = |f: &str| format!("requests[{i}].{f}");
            if let (Some(fam), Some(addr)) = (r.family, r.address)
                && Family::of(addr) != fam
            {
                return Err(bad(at("address"), "is not of the family asked for"));
            }
            let source = match (&r.pools, r.family) {
                (Some(p), _) if p.is_empty() => {
                    return Err(bad(at("pools"), "name at least one pool or leave it out"));
                }
                (Some(_), Some(_)) => {
                    return Err(bad(at("family"), "give pools or family, not both"));
                }
                (Some(_), None) if r.purpose.is_some() => {
                    return Err(bad(
                        at("purpose"),
                        "purpose selects pools by family; give family",
                    ));
                }
                (Some(p), None) => Source::Pools(p.clone()),
                (None, Some(family)) => Source::Family {
                    family,
                    purpose: r.purpose,
                },
                (None, None) => match r.address {
                    Some(a) => Source::Family {
                        family: Family::of(a),
                        purpose: r.purpose,
                    },
                    None => return Err(bad(at("pools"), "give pools, family or address")),
                },
            };
            wants.push(Want {
                source,
                addr: r.address,
            });
        }
        let mut attrs = self.attrs.clone();
        if let Some(pod) = &self.pod {
            for (k, v) in [
                (POD_NAMESPACE, &pod.namespace),
                (POD_NAME, &pod.name),
                (POD_UID, &pod.uid),
            ] {
                if let Some(v) = v {
                    attrs.insert(k.to_string(), v.clone());
                }
            }
        }
        Ok(AllocRequest {
            handle: self.handle.clone(),
            node: self.node.clone(),
            attrs,
            wants,
        })
    }
}

/// An address and the pool it came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AddressView {
    /// Pool.
    pub pool: String,
    /// The address.
    #[schema(value_type = String, example = "10.244.1.7")]
    pub address: IpAddr,
}

impl From<&HeldAddr> for AddressView {
    fn from(a: &HeldAddr) -> AddressView {
        AddressView {
            pool: a.pool.to_string(),
            address: a.addr,
        }
    }
}

/// A handle and what it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AllocationView {
    /// The handle.
    pub handle: String,
    /// Its node.
    pub node: String,
    /// Its attributes.
    #[serde(default)]
    pub attrs: BTreeMap<String, String>,
    /// What it holds, in request order.
    pub addresses: Vec<AddressView>,
    /// When it first allocated (RFC 3339).
    #[schema(example = "2025-05-01T12:00:00.000Z")]
    pub created: String,
}

impl From<&Handle> for AllocationView {
    fn from(h: &Handle) -> AllocationView {
        AllocationView {
            handle: h.key.to_string(),
            node: h.node.to_string(),
            attrs: h.attrs.clone(),
            addresses: h.addrs.iter().map(AddressView::from).collect(),
            created: crate::time::format(h.created),
        }
    }
}

/// `DELETE /v1/allocations/{handle}`: what was released (empty when the handle held
/// nothing: release is idempotent).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReleaseResponse {
    /// The handle.
    pub handle: String,
    /// Addresses released.
    pub released: Vec<AddressView>,
}

/// Query of `GET /v1/allocations`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AllocationQuery {
    /// Only handles holding an address of this pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Only handles of this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Only handles whose key starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handle: Option<String>,
    /// Most items per page (default 500, at most 5000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(minimum = 1, maximum = 5000)]
    pub limit: Option<u32>,
    /// The `continue` token of the previous page.
    #[serde(default, rename = "continue", skip_serializing_if = "Option::is_none")]
    #[param(rename = "continue")]
    pub continue_token: Option<String>,
}

/// `GET /v1/allocations`: a page of handles in key order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AllocationList {
    /// Handles of this page.
    pub items: Vec<AllocationView>,
    /// Pass as `continue` for the next page; absent on the last page.
    #[serde(default, rename = "continue", skip_serializing_if = "Option::is_none")]
    #[schema(rename = "continue")]
    pub continue_token: Option<String>,
}

/// The opaque `continue` token for a page that ended at `last_key` (hex of the key, so it
/// is URL-safe whatever the key holds).
pub fn continue_token(last_key: &str) -> String {
    last_key.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The key a `continue` token resumes after; `None` if it is not one kipamd made.
pub fn parse_continue_token(token: &str) -> Option<String> {
    if !token.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|i| {
            token
                .get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    String::from_utf8(bytes?).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn req(json: serde_json::Value) -> AllocateRequest {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn converts_pools_family_and_static() {
        let r = req(serde_json::json!({
            "handle": "net/c1/eth0",
            "pod": {"namespace": "ns", "name": "p", "uid": "u"},
            "attrs": {"team": "a"},
            "requests": [
                {"pools": ["a", "b"]},
                {"family": "ipv6", "purpose": "pod"},
                {"address": "10.0.0.5"}
            ]
        }));
        let c = r.to_core().unwrap();
        assert_eq!(c.node, "default");
        assert_eq!(c.attrs[POD_NAMESPACE], "ns");
        assert_eq!(c.attrs[POD_NAME], "p");
        assert_eq!(c.attrs[POD_UID], "u");
        assert_eq!(c.attrs["team"], "a");
        assert_eq!(
            c.wants[0].source,
            Source::Pools(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            c.wants[1].source,
            Source::Family {
                family: Family::Ipv6,
                purpose: Some(Purpose::Pod)
            }
        );
        assert_eq!(
            c.wants[2].source,
            Source::Family {
                family: Family::Ipv4,
                purpose: None
            }
        );
        assert_eq!(c.wants[2].addr, Some("10.0.0.5".parse().unwrap()));
    }

    #[test]
    fn refuses_bad_shapes_naming_the_field() {
        let cases = [
            (
                serde_json::json!({"handle": "h", "requests": []}),
                "requests",
            ),
            (
                serde_json::json!({"handle": "h", "requests": [{}]}),
                "requests[0].pools",
            ),
            (
                serde_json::json!({"handle": "h", "requests": [{"pools": []}]}),
                "requests[0].pools",
            ),
            (
                serde_json::json!({"handle": "h", "requests": [{}, {"pools": ["a"], "family": "ipv4"}]}),
                "requests[0].pools",
            ),
            (
                serde_json::json!({"handle": "h", "requests": [{"family": "ipv6", "address": "10.0.0.1"}]}),
                "requests[0].address",
            ),
            (
                serde_json::json!({"handle": "h", "requests": [{"pools": ["a"], "purpose": "pod"}]}),
                "requests[0].purpose",
            ),
        ];
        for (json, field) in cases {
            assert_eq!(
                req(json.clone()).to_core().unwrap_err().field,
                field,
                "{json}"
            );
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        let r: Result<AllocateRequest, _> =
            serde_json::from_value(serde_json::json!({"handle": "h", "requests": [], "pool": "x"}));
        assert!(r.is_err());
    }

    #[test]
    fn continue_tokens_round_trip() {
        for key in ["", "net/abc/eth0", "ünïcode/x", "a b&c=d"] {
            let t = continue_token(key);
            assert!(t.bytes().all(|b| b.is_ascii_hexdigit()));
            assert_eq!(parse_continue_token(&t).as_deref(), Some(key));
        }
        assert_eq!(parse_continue_token("zz"), None);
        assert_eq!(parse_continue_token("abc"), None);
        assert_eq!(parse_continue_token("ff"), None);
    }
}
