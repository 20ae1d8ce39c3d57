//! The template against itself: every reference resolves, every parameter is used, and
//! `dependsOn` orders the deployment without a cycle.

use crate::expr::{self, Expr, KNOWN_FUNCTIONS};
use crate::model::{self, Template, BUILT_IN_TYPES};
use crate::template;
use std::collections::BTreeSet;

/// Every `parameters(...)` and `variables(...)` names a declared one, every `resourceId`,
/// `extensionResourceId`, `reference` and `scope` names a resource the template declares (or
/// a built-in role definition), `reference` asks for the declared apiVersion, every function
/// is one ARM has, and every parameter and variable is used.
#[test]
fn every_reference_resolves_and_every_parameter_is_used() {
    let t = template();
    let mut errors = Vec::new();
    let mut used_parameters = BTreeSet::new();
    let mut used_variables = BTreeSet::new();
    for (at, e) in t.all_expressions() {
        let mut nodes = Vec::new();
        e.walk(&mut nodes);
        for node in nodes {
            let Expr::Call(name, args) = node else {
                continue;
            };
            if !KNOWN_FUNCTIONS.contains(&name.as_str()) {
                errors.push(format!("{at}: {name}() is not an ARM function this template knows"));
            }
            let first = args.first().and_then(Expr::str);
            match name.as_str() {
                "parameters" => match first {
                    Some(p) if t.parameters().contains_key(p) => {
                        if !at.starts_with(&format!("$.parameters.{p}.")) {
                            used_parameters.insert(p.to_string());
                        }
                    }
                    _ => errors.push(format!("{at}: undeclared parameter in {node:?}")),
                },
                "variables" => match first {
                    Some(v) if t.variables().contains_key(v) => {
                        if !at.starts_with(&format!("$.variables.{v}")) {
                            used_variables.insert(v.to_string());
                        }
                    }
                    _ => errors.push(format!("{at}: undeclared variable in {node:?}")),
                },
                "resourceid" | "subscriptionresourceid" | "extensionresourceid" => match t.id_of(node) {
                    None => errors.push(format!("{at}: cannot read {node:?}")),
                    Some((id, scope)) => {
                        let built_in = BUILT_IN_TYPES.iter().any(|b| b.eq_ignore_ascii_case(&id.ty));
                        if !built_in && t.find(&id, scope.as_ref()).is_none() {
                            errors.push(format!("{at}: no declared resource is {node:?}"));
                        }
                    }
                },
                "reference" => match args.first().and_then(|a| t.referenced(a)) {
                    None => errors.push(format!("{at}: {node:?} names no declared resource")),
                    Some(i) => {
                        let declared = &t.resources[i].api_version;
                        if let Some(v) = args.get(1).and_then(Expr::str) {
                            if v != declared {
                                errors.push(format!(
                                    "{at}: reference asks for {v}, the resource is deployed with {declared}"
                                ));
                            }
                        }
                    }
                },
                _ => {}
            }
        }
    }
    for r in &t.resources {
        if let Some(scope) = &r.scope {
            if t.find(scope, None).is_none() {
                errors.push(format!("{}: its scope names no declared resource", r.label()));
            }
        }
    }
    for p in t.parameters().keys() {
        if !used_parameters.contains(p) {
            errors.push(format!("parameter {p} is never used"));
        }
    }
    for v in t.variables().keys() {
        if !used_variables.contains(v) {
            errors.push(format!("variable {v} is never used"));
        }
    }
    assert!(errors.is_empty(), "{errors:#?}");
}

/// `dependsOn` names declared resources and forms no cycle, and each resource depends
/// (directly or through others) on every declared resource it points at: its parent, its
/// scope, and those its body names with `resourceId` or `reference`.
#[test]
fn depends_on_names_declared_resources_and_forms_no_cycle() {
    let t = template();
    let mut errors = Vec::new();
    let n = t.resources.len();
    let mut edges: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, r) in t.resources.iter().enumerate() {
        for d in r.json["dependsOn"].as_array().into_iter().flatten() {
            let target = match d.as_str().and_then(expr::parse_value) {
                Some(Ok(e)) => t.id_of(&e).and_then(|(id, scope)| t.find(&id, scope.as_ref())),
                _ => d
                    .as_str()
                    .and_then(|name| t.resources.iter().position(|x| x.json["name"].as_str() == Some(name))),
            };
            match target {
                Some(j) if j == i => errors.push(format!("{} depends on itself", r.label())),
                Some(j) => edges[i].push(j),
                None => errors.push(format!("{}: dependsOn {d} names no declared resource", r.label())),
            }
        }
    }
    if let Some(cycle) = find_cycle(&edges) {
        let names: Vec<String> = cycle.iter().map(|&i| t.resources[i].label()).collect();
        errors.push(format!("dependsOn cycle: {}", names.join(" -> ")));
    } else {
        for (i, r) in t.resources.iter().enumerate() {
            let reachable = reachable(&edges, i);
            for needed in needs(&t, i) {
                if !reachable.contains(&needed) {
                    errors.push(format!(
                        "{} points at {} but does not depend on it",
                        r.label(),
                        t.resources[needed].label()
                    ));
                }
            }
        }
    }
    assert!(errors.is_empty(), "{errors:#?}");
}

/// A cycle of the graph, as the resources on it, first repeated last.
fn find_cycle(edges: &[Vec<usize>]) -> Option<Vec<usize>> {
    fn visit(i: usize, edges: &[Vec<usize>], state: &mut [u8], stack: &mut Vec<usize>) -> Option<Vec<usize>> {
        state[i] = 1;
        stack.push(i);
        for &j in &edges[i] {
            if state[j] == 1 {
                let from = stack.iter().position(|&s| s == j).unwrap();
                let mut cycle = stack[from..].to_vec();
                cycle.push(j);
                return Some(cycle);
            }
            if state[j] == 0 {
                if let Some(c) = visit(j, edges, state, stack) {
                    return Some(c);
                }
            }
        }
        stack.pop();
        state[i] = 2;
        None
    }
    let mut state = vec![0u8; edges.len()];
    (0..edges.len()).find_map(|i| {
        (state[i] == 0)
            .then(|| visit(i, edges, &mut state, &mut Vec::new()))
            .flatten()
    })
}

fn reachable(edges: &[Vec<usize>], from: usize) -> BTreeSet<usize> {
    let mut seen = BTreeSet::new();
    let mut todo = edges[from].clone();
    while let Some(i) = todo.pop() {
        if seen.insert(i) {
            todo.extend(&edges[i]);
        }
    }
    seen
}

/// The declared resources resource `i` must be deployed after.
fn needs(t: &Template, i: usize) -> BTreeSet<usize> {
    let r = &t.resources[i];
    let mut out = BTreeSet::new();
    if let Some(scope) = &r.scope {
        out.extend(t.find(scope, None));
    }
    // The nearest declared ancestor (a container's storage account: blobServices/default
    // exists without being declared).
    let mut ty = r.ty.as_str();
    let mut names = &r.id.names[..];
    while let Some((parent, _)) = ty.rsplit_once('/').filter(|(p, _)| p.contains('/')) {
        ty = parent;
        names = &names[..names.len().saturating_sub(1)];
        let id = model::Id {
            ty: ty.to_string(),
            names: names.to_vec(),
        };
        if let Some(j) = t.find(&id, r.scope.as_ref()) {
            out.insert(j);
            break;
        }
    }
    let mut found = Vec::new();
    let _ = expr::expressions(&r.body(), "$", &mut found);
    for (_, e) in found {
        let mut nodes = Vec::new();
        e.walk(&mut nodes);
        for node in nodes {
            if let Some(args) = node.call("reference") {
                out.extend(args.first().and_then(|a| t.referenced(a)));
            } else if let Some((id, scope)) = t.id_of(node) {
                out.extend(t.find(&id, scope.as_ref()));
            }
        }
    }
    out.remove(&i);
    out
}
