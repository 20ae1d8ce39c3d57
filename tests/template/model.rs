//! The template as the tests see it: its parameters, variables and resources, each resource
//! with an identity (type and name segments) that `resourceId(...)`, `reference(...)`,
//! `scope` and `dependsOn` can be matched against.

use crate::expr::{self, Expr, Ty};
use serde_json::{Map, Value};

/// Keys of a template resource that ARM handles itself; the rest is the PUT body.
pub const ARM_KEYS: &[&str] = &[
    "type",
    "apiVersion",
    "name",
    "dependsOn",
    "scope",
    "condition",
    "copy",
    "comments",
];

/// Resource types a template may point at without declaring them.
pub const BUILT_IN_TYPES: &[&str] = &["Microsoft.Authorization/roleDefinitions"];

pub struct Template {
    pub json: Value,
    pub resources: Vec<Resource>,
}

pub struct Resource {
    pub ty: String,
    pub api_version: String,
    pub id: Id,
    /// The resource an extension resource (a role assignment) applies to.
    pub scope: Option<Id>,
    pub json: Value,
}

impl Resource {
    /// `type name` for messages.
    pub fn label(&self) -> String {
        format!("{} {}", self.ty, self.json["name"].as_str().unwrap_or("?"))
    }

    /// The PUT body: the resource without the keys ARM handles.
    pub fn body(&self) -> Value {
        let mut body = Map::new();
        for (k, v) in self.json.as_object().into_iter().flatten() {
            if !ARM_KEYS.contains(&k.as_str()) {
                body.insert(k.clone(), v.clone());
            }
        }
        Value::Object(body)
    }
}

/// A resource's identity: its type and one segment per name level
/// (`storageAccounts/blobServices/containers` has three).
#[derive(Debug, Clone)]
pub struct Id {
    pub ty: String,
    pub names: Vec<Seg>,
}

#[derive(Debug, Clone)]
pub enum Seg {
    Lit(String),
    Expr(Expr),
}

impl PartialEq for Seg {
    fn eq(&self, other: &Seg) -> bool {
        match (self, other) {
            // ARM names are case-insensitive.
            (Seg::Lit(a), Seg::Lit(b)) => a.eq_ignore_ascii_case(b),
            (Seg::Expr(a), Seg::Expr(b)) => a == b,
            _ => false,
        }
    }
}

impl PartialEq for Id {
    fn eq(&self, other: &Id) -> bool {
        self.ty.eq_ignore_ascii_case(&other.ty) && self.names == other.names
    }
}

impl Template {
    pub fn load(text: &str) -> Template {
        let json: Value = serde_json::from_str(text).expect("infra/azuredeploy.json is JSON");
        let mut template = Template {
            json,
            resources: Vec::new(),
        };
        let resources: Vec<Value> = template.json["resources"]
            .as_array()
            .expect("resources is an array")
            .clone();
        for json in resources {
            let ty = json["type"].as_str().unwrap_or_default().to_string();
            let name = json["name"].as_str().unwrap_or_default();
            let id = template
                .name_to_id(&ty, name)
                .unwrap_or_else(|e| panic!("{ty} {name}: {e}"));
            let scope = json["scope"].as_str().map(|s| {
                template
                    .scope_to_id(s)
                    .unwrap_or_else(|e| panic!("{ty} {name} scope: {e}"))
            });
            template.resources.push(Resource {
                ty,
                api_version: json["apiVersion"].as_str().unwrap_or_default().to_string(),
                id,
                scope,
                json,
            });
        }
        template
    }

    pub fn parameters(&self) -> &Map<String, Value> {
        self.json["parameters"].as_object().expect("parameters")
    }

    pub fn variables(&self) -> &Map<String, Value> {
        self.json["variables"].as_object().expect("variables")
    }

    pub fn resources_of(&self, ty: &str) -> Vec<&Resource> {
        self.resources
            .iter()
            .filter(|r| r.ty.eq_ignore_ascii_case(ty))
            .collect()
    }

    /// The one resource of a type.
    pub fn resource(&self, ty: &str) -> &Resource {
        let found = self.resources_of(ty);
        assert_eq!(found.len(), 1, "one {ty} expected, found {}", found.len());
        found[0]
    }

    /// A segment for an expression, with `'text'` and `variables('v')` holding text
    /// turned into the text itself.
    pub fn seg(&self, e: &Expr) -> Seg {
        if let Some(s) = e.str() {
            return Seg::Lit(s.to_string());
        }
        if let Some(v) = e.call("variables").and_then(|a| a.first()?.str()) {
            if let Some(text) = self.variables().get(v).and_then(Value::as_str) {
                if expr::parse_value(text).is_none() {
                    return Seg::Lit(text.to_string());
                }
            }
        }
        Seg::Expr(e.clone())
    }

    /// Name segments of a `name` value: `a/b`, `[format('{0}/b', x)]` or `[x]`.
    fn name_segments(&self, name: &str) -> Result<Vec<Seg>, String> {
        match expr::parse_value(name) {
            None => Ok(name.split('/').map(|s| Seg::Lit(s.into())).collect()),
            Some(Err(e)) => Err(e),
            Some(Ok(e)) => match e.call("format") {
                Some([fmt, args @ ..]) => {
                    let fmt = fmt.str().ok_or("format's first argument is not text")?;
                    fmt.split('/').map(|piece| self.format_piece(piece, args)).collect()
                }
                _ => Ok(vec![self.seg(&e)]),
            },
        }
    }

    fn format_piece(&self, piece: &str, args: &[Expr]) -> Result<Seg, String> {
        if let Some(n) = piece.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            let i: usize = n.parse().map_err(|_| format!("placeholder {piece}"))?;
            return args.get(i).map(|a| self.seg(a)).ok_or(format!("no argument {i}"));
        }
        if piece.contains('{') {
            return Err(format!("segment `{piece}` mixes text and a placeholder"));
        }
        Ok(Seg::Lit(piece.into()))
    }

    fn name_to_id(&self, ty: &str, name: &str) -> Result<Id, String> {
        Ok(Id {
            ty: ty.to_string(),
            names: self.name_segments(name)?,
        })
    }

    /// A `scope` value: `Namespace/type/{name}` as text or format, or a `resourceId(...)`.
    fn scope_to_id(&self, scope: &str) -> Result<Id, String> {
        if let Some(Ok(e)) = expr::parse_value(scope) {
            if let Some((id, _)) = self.id_of(&e) {
                return Ok(id);
            }
        }
        let segs = self.name_segments(scope)?;
        let namespace = match segs.first() {
            Some(Seg::Lit(ns)) if segs.len() % 2 == 1 && segs.len() >= 3 => ns.clone(),
            _ => return Err(format!("scope {scope} is not Namespace/type/name")),
        };
        let mut ty = namespace;
        let mut names = Vec::new();
        for pair in segs[1..].chunks(2) {
            match &pair[0] {
                Seg::Lit(t) => ty = format!("{ty}/{t}"),
                Seg::Expr(_) => return Err(format!("scope {scope}: a type segment is not text")),
            }
            names.push(pair[1].clone());
        }
        Ok(Id { ty, names })
    }

    /// The identity a `resourceId`, `subscriptionResourceId` or `extensionResourceId`
    /// call names, with the scope for the last.
    pub fn id_of(&self, e: &Expr) -> Option<(Id, Option<Id>)> {
        if let Some(args) = e.call("resourceid").or(e.call("subscriptionresourceid")) {
            // Leading subscription and resource group arguments come before the type,
            // the only argument with a `/`.
            let at = args.iter().position(|a| a.str().is_some_and(|s| s.contains('/')))?;
            let names = args[at + 1..].iter().map(|a| self.seg(a)).collect();
            return Some((
                Id {
                    ty: args[at].str()?.to_string(),
                    names,
                },
                None,
            ));
        }
        let args = e.call("extensionresourceid")?;
        let (base, _) = self.id_of(args.first()?)?;
        let names = args.get(2..)?.iter().map(|a| self.seg(a)).collect();
        Some((
            Id {
                ty: args.get(1)?.str()?.to_string(),
                names,
            },
            Some(base),
        ))
    }

    /// The declared resource with this identity.
    pub fn find(&self, id: &Id, scope: Option<&Id>) -> Option<usize> {
        self.resources
            .iter()
            .position(|r| &r.id == id && r.scope.as_ref() == scope)
    }

    /// The declared resource a `reference(...)` argument names: a resource id, or the
    /// resource's name as text.
    pub fn referenced(&self, arg: &Expr) -> Option<usize> {
        if let Some((id, scope)) = self.id_of(arg) {
            return self.find(&id, scope.as_ref());
        }
        let name = arg.str()?;
        self.resources
            .iter()
            .position(|r| r.json["name"].as_str() == Some(name))
    }

    /// The type an expression yields.
    pub fn ty(&self, e: &Expr) -> Ty {
        match e {
            Expr::Str(_) => Ty::String,
            Expr::Int(_) => Ty::Integer,
            Expr::Member(..) | Expr::Index(..) => Ty::Unknown,
            Expr::Call(name, args) => match name.as_str() {
                "parameters" => args
                    .first()
                    .and_then(Expr::str)
                    .and_then(|p| self.parameters().get(p))
                    .and_then(|p| p["type"].as_str())
                    .map_or(Ty::Unknown, Ty::of_parameter),
                "variables" => args
                    .first()
                    .and_then(Expr::str)
                    .and_then(|v| self.variables().get(v))
                    .map_or(Ty::Unknown, |v| self.ty_of_value(v)),
                "format"
                | "tolower"
                | "toupper"
                | "uniquestring"
                | "guid"
                | "resourceid"
                | "subscriptionresourceid"
                | "extensionresourceid"
                | "replace" => Ty::String,
                "concat" | "take" => args.first().map_or(Ty::Unknown, |a| self.ty(a)),
                "equals" | "greater" => Ty::Boolean,
                "createarray" => Ty::Array,
                "createobject" => Ty::Object,
                "if" => match (args.get(1).map(|a| self.ty(a)), args.get(2).map(|a| self.ty(a))) {
                    (Some(a), Some(b)) if a == b => a,
                    _ => Ty::Unknown,
                },
                _ => Ty::Unknown,
            },
        }
    }

    /// The type of a template value: an expression's, or the JSON value's own.
    pub fn ty_of_value(&self, v: &Value) -> Ty {
        match v.as_str().and_then(expr::parse_value) {
            Some(Ok(e)) => self.ty(&e),
            Some(Err(_)) => Ty::Unknown,
            None => Ty::of(v),
        }
    }

    /// The literal values an expression can take, where the template says: a
    /// parameter's allowed values (or its literal default), a variable's literal value.
    /// `None` when it is not known.
    pub fn possible_values(&self, e: &Expr) -> Option<Vec<Value>> {
        if let Some(p) = e.parameter() {
            let p = self.parameters().get(p)?;
            if let Some(allowed) = p["allowedValues"].as_array() {
                return Some(allowed.clone());
            }
            let default = p.get("defaultValue")?;
            let is_expression = default.as_str().and_then(expr::parse_value).is_some();
            return (!is_expression).then(|| vec![default.clone()]);
        }
        let v = e.call("variables")?.first()?.str()?;
        let value = self.variables().get(v)?;
        let is_expression = value.as_str().and_then(expr::parse_value).is_some();
        (!is_expression).then(|| vec![value.clone()])
    }

    /// Every expression in the template, with where it sits.
    pub fn all_expressions(&self) -> Vec<(String, Expr)> {
        let mut out = Vec::new();
        let errors = expr::expressions(&self.json, "$", &mut out);
        assert!(errors.is_empty(), "expressions that do not parse: {errors:#?}");
        out
    }
}
