//! Overlap detection among pools, prefix leases, external networks and reservations.
//!
//! Overlaps are errors inside a scope and allowed across scopes (a scope is an address
//! space, like a VRF). A prefix lease lies inside its own pool by construction; that pair
//! is not an overlap. Everything else that shares an address within a scope is.
//!
//! Detection is a sweep over the objects sorted by first address, so listing every pair
//! costs O(n log n + pairs), not O(n²).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::prefix::AddrRange;

/// The kinds of objects that occupy address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ObjectKind {
    /// A pool.
    Pool,
    /// A prefix lease out of a pool.
    Lease,
    /// A network used outside kipam.
    External,
    /// A range set aside in a scope.
    Reservation,
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ObjectKind::Pool => "pool",
            ObjectKind::Lease => "prefix lease",
            ObjectKind::External => "external network",
            ObjectKind::Reservation => "reservation",
        })
    }
}

/// Names an object: its kind and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectRef {
    /// Kind.
    pub kind: ObjectKind,
    /// Name (for a lease: `pool/prefix`).
    pub name: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.name)
    }
}

/// An object with its address space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetObject {
    /// What it is.
    pub id: ObjectRef,
    /// Its scope.
    pub scope: String,
    /// Its addresses.
    pub range: AddrRange,
    /// For a lease, the pool it came from.
    pub parent: Option<String>,
}

/// Two objects of one scope that share addresses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overlap {
    /// The scope.
    pub scope: String,
    /// One object.
    pub a: ObjectRef,
    /// Its range.
    pub a_range: AddrRange,
    /// The other object.
    pub b: ObjectRef,
    /// Its range.
    pub b_range: AddrRange,
    /// The addresses they share.
    pub shared: AddrRange,
}

fn expected(a: &NetObject, b: &NetObject) -> bool {
    let inside = |lease: &NetObject, pool: &NetObject| {
        lease.id.kind == ObjectKind::Lease
            && pool.id.kind == ObjectKind::Pool
            && lease.parent.as_deref() == Some(pool.id.name.as_str())
    };
    inside(a, b) || inside(b, a)
}

/// Every overlapping pair within each scope, sorted by scope and address.
pub fn find_overlaps(objects: &[NetObject]) -> Vec<Overlap> {
    let mut sorted: Vec<&NetObject> = objects.iter().collect();
    sorted.sort_by(|x, y| {
        (&x.scope, x.range.family(), x.range.bounds().0).cmp(&(
            &y.scope,
            y.range.family(),
            y.range.bounds().0,
        ))
    });
    let mut out = Vec::new();
    let mut active: Vec<&NetObject> = Vec::new();
    for obj in sorted {
        let (first, _) = obj.range.bounds();
        active.retain(|a| {
            a.scope == obj.scope
                && a.range.family() == obj.range.family()
                && a.range.bounds().1 >= first
        });
        for a in &active {
            if expected(a, obj) {
                continue;
            }
            if let Some(shared) = a.range.intersection(&obj.range) {
                out.push(Overlap {
                    scope: obj.scope.clone(),
                    a: a.id.clone(),
                    a_range: a.range,
                    b: obj.id.clone(),
                    b_range: obj.range,
                    shared,
                });
            }
        }
        active.push(obj);
    }
    out
}

/// The first object of `existing` in `scope` that `range` would overlap, skipping `skip`
/// (e.g. the pool a lease comes from).
pub fn first_conflict<'a>(
    existing: impl IntoIterator<Item = &'a NetObject>,
    scope: &str,
    range: &AddrRange,
    skip: Option<&ObjectRef>,
) -> Option<&'a NetObject> {
    existing
        .into_iter()
        .filter(|o| o.scope == scope && Some(&o.id) != skip)
        .find(|o| o.range.intersects(range))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(
        kind: ObjectKind,
        name: &str,
        scope: &str,
        cidr: &str,
        parent: Option<&str>,
    ) -> NetObject {
        NetObject {
            id: ObjectRef {
                kind,
                name: name.into(),
            },
            scope: scope.into(),
            range: AddrRange::of_net(cidr.parse().expect("test CIDR")),
            parent: parent.map(str::to_string),
        }
    }

    #[test]
    fn lists_every_pair_within_scope_only() {
        let objs = vec![
            obj(ObjectKind::Pool, "pods", "prod", "10.0.0.0/16", None),
            obj(
                ObjectKind::Lease,
                "pods/10.0.1.0/24",
                "prod",
                "10.0.1.0/24",
                Some("pods"),
            ),
            obj(
                ObjectKind::External,
                "office",
                "prod",
                "10.0.128.0/17",
                None,
            ),
            obj(ObjectKind::External, "vpn", "prod", "10.0.200.0/24", None),
            obj(ObjectKind::Pool, "lab", "lab", "10.0.0.0/16", None),
            obj(ObjectKind::Pool, "v6", "prod", "fd00::/64", None),
        ];
        let found = find_overlaps(&objs);
        let names: Vec<(String, String)> = found
            .iter()
            .map(|o| (o.a.name.clone(), o.b.name.clone()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("pods".to_string(), "office".to_string()),
                ("pods".to_string(), "vpn".to_string()),
                ("office".to_string(), "vpn".to_string()),
            ]
        );
        assert_eq!(found[0].shared.to_string(), "10.0.128.0-10.0.255.255");
    }
}
