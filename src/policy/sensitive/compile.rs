//! Compiling the rule definitions: regexes, field names, each direction's prefilter.

use super::prefilter::{case_variants, Prefilter, Target};
use super::{rules, Direction, Guard, GuardAction, RuleDef, RuleError, RuleKind, DEFAULT_FIELD_NAMES, MAX_RULES};

#[derive(Debug)]
pub(super) enum Kind {
    Card,
    Iban,
    Aws,
    Pem,
    Jwt,
    Fields { names: Vec<Box<[u8]>>, longest: usize },
    Pattern { re: regex::Regex, anchored: bool, keyworded: bool },
}

#[derive(Debug)]
pub(super) struct Rule {
    pub(super) name: String,
    pub(super) action: GuardAction,
    pub(super) min_matches: u32,
    pub(super) kind: Kind,
}

/// The rules of one direction, their automata and which kinds are on.
#[derive(Debug, Default)]
pub(super) struct Plan {
    pub(super) rules: Vec<usize>,
    /// Stage 2's automaton: the value anchors (AWS prefixes, PEM, JWT) and the keywords.
    pub(super) pre: Prefilter,
    /// Stage 1's automaton: the keywords only (the built-ins have their own scans).
    pub(super) keywords: Prefilter,
    /// The field names of every `password_field` rule, for stage 1's quote scan.
    pub(super) names: NameIndex,
    pub(super) digits: bool,
    pub(super) card: Vec<usize>,
    pub(super) iban: Vec<usize>,
    pub(super) aws: Vec<usize>,
    pub(super) pem: Vec<usize>,
    pub(super) jwt: Vec<usize>,
    pub(super) fields: Vec<usize>,
    /// Patterns without keywords: their regex runs on every message.
    pub(super) always: Vec<usize>,
    pub(super) patterns: Vec<usize>,
}

/// What stage 1 needs to know of the field names: per first byte (lowercase), the lengths
/// of the names starting with it (bit `n` for `n` bytes; bit 63 for 63 bytes or more).
#[derive(Debug)]
pub(super) struct NameIndex {
    lengths: Box<[u64; 256]>,
}

impl Default for NameIndex {
    fn default() -> Self {
        NameIndex { lengths: Box::new([0; 256]) }
    }
}

impl NameIndex {
    fn add(&mut self, name: &[u8]) {
        if let Some(&c) = name.first() {
            self.lengths[usize::from(c.to_ascii_lowercase())] |= 1 << name.len().min(63);
        }
    }

    /// Whether a member name of `len` bytes starting with `first` may be one of the names
    /// (ASCII case-insensitively).
    #[inline]
    pub(super) fn may_be(&self, len: usize, first: u8) -> bool {
        self.lengths[usize::from(first.to_ascii_lowercase())] & (1 << len.min(63)) != 0
    }
}

fn compile_rule(i: usize, def: &RuleDef) -> Result<Kind, RuleError> {
    let err = |field, message: String| RuleError { rule: i, field, message };
    Ok(match &def.kind {
        RuleKind::CardNumber => Kind::Card,
        RuleKind::Iban => Kind::Iban,
        RuleKind::AwsAccessKey => Kind::Aws,
        RuleKind::PrivateKeyPem => Kind::Pem,
        RuleKind::Jwt => Kind::Jwt,
        RuleKind::PasswordField { names } => {
            let list: Vec<&str> = if names.is_empty() {
                DEFAULT_FIELD_NAMES.to_vec()
            } else {
                names.iter().map(String::as_str).collect()
            };
            let mut out: Vec<Box<[u8]>> = Vec::new();
            for n in list {
                if n.is_empty() || n.len() > 128 || n.bytes().any(|c| c == b'"' || c == b'\\' || c < 0x20) {
                    return Err(err(
                        "fields",
                        format!(
                            "{n:?}: a field name is 1 to 128 bytes without quotes, backslashes or control characters"
                        ),
                    ));
                }
                out.push(n.to_ascii_lowercase().into_bytes().into_boxed_slice());
            }
            let longest = out.iter().map(|n| n.len()).max().unwrap_or(0);
            Kind::Fields { names: out, longest }
        }
        RuleKind::Pattern { regex, keywords } => {
            if regex.is_empty() {
                return Err(err("pattern", "the pattern is empty".into()));
            }
            let re = regex::RegexBuilder::new(regex)
                .size_limit(1 << 20)
                .dfa_size_limit(2 << 20)
                .build()
                .map_err(|e| err("pattern", e.to_string()))?;
            if re.is_match("") {
                return Err(err("pattern", "the pattern matches the empty string".into()));
            }
            let anchored = regex_syntax::Parser::new()
                .parse(regex)
                .map_or(true, |hir| hir.properties().look_set().contains_anchor());
            for k in keywords {
                if k.is_empty() || k.len() > 256 {
                    return Err(err("keywords", format!("{k:?}: a keyword is 1 to 256 bytes")));
                }
            }
            Kind::Pattern { re, anchored, keyworded: !keywords.is_empty() }
        }
    })
}

fn build_plan(rules: &[Rule], defs: &[RuleDef], ids: Vec<usize>) -> Result<Plan, RuleError> {
    let mut plan = Plan::default();
    let mut pairs: Vec<(Vec<u8>, Target)> = Vec::new();
    let mut keyword_pairs: Vec<(Vec<u8>, Target)> = Vec::new();
    for &i in &ids {
        let Some(rule) = rules.get(i) else { continue };
        match &rule.kind {
            Kind::Card => plan.card.push(i),
            Kind::Iban => plan.iban.push(i),
            Kind::Aws => {
                plan.aws.push(i);
                pairs.extend(rules::AWS_PREFIXES.iter().map(|p| (p.as_bytes().to_vec(), Target::Aws)));
            }
            Kind::Pem => {
                plan.pem.push(i);
                pairs.push((rules::PEM_ANCHOR.as_bytes().to_vec(), Target::Pem));
            }
            Kind::Jwt => {
                plan.jwt.push(i);
                pairs.push((rules::JWT_ANCHOR.as_bytes().to_vec(), Target::Jwt));
            }
            Kind::Fields { names, .. } => {
                plan.fields.push(i);
                names.iter().for_each(|n| plan.names.add(n));
            }
            Kind::Pattern { keyworded, .. } => {
                plan.patterns.push(i);
                if !keyworded {
                    plan.always.push(i);
                }
                if let Some(RuleDef { kind: RuleKind::Pattern { keywords, .. }, .. }) = defs.get(i) {
                    for k in keywords {
                        let word = k.to_ascii_lowercase().into_bytes().into_boxed_slice();
                        let head = word.get(..3).unwrap_or(&word);
                        for v in case_variants(head) {
                            keyword_pairs.push((v.clone(), Target::Keyword { rule: i, word: word.clone() }));
                            pairs.push((v, Target::Keyword { rule: i, word: word.clone() }));
                        }
                    }
                }
            }
        }
    }
    plan.digits = !plan.card.is_empty() || !plan.iban.is_empty();
    let built = |pairs| {
        Prefilter::build(pairs).map_err(|e| RuleError {
            rule: ids.last().copied().unwrap_or(0),
            field: "keywords",
            message: format!("the prefilter does not build: {e}"),
        })
    };
    plan.pre = built(pairs)?;
    plan.keywords = built(keyword_pairs)?;
    plan.rules = ids;
    Ok(plan)
}

impl Guard {
    /// Compile the rules (regexes, the prefilter automata of both directions).
    pub fn compile(defs: &[RuleDef]) -> Result<Guard, RuleError> {
        if defs.len() > MAX_RULES {
            return Err(RuleError {
                rule: MAX_RULES,
                field: "rule",
                message: format!("at most {MAX_RULES} rules per route"),
            });
        }
        let mut rules = Vec::with_capacity(defs.len());
        for (i, d) in defs.iter().enumerate() {
            rules.push(Rule {
                name: d.name.clone(),
                action: d.action,
                min_matches: d.min_matches,
                kind: compile_rule(i, d)?,
            });
        }
        // per direction (client to upstream, upstream to client, both): the rules reading it
        let plans_of = |binary_only: bool| -> Result<[Plan; 3], RuleError> {
            let ids = |keep: &dyn Fn(Direction) -> bool| -> Vec<usize> {
                let read = |d: &RuleDef| keep(d.direction) && (d.binary || !binary_only);
                defs.iter().enumerate().filter(|(_, d)| read(d)).map(|(i, _)| i).collect()
            };
            Ok([
                build_plan(&rules, defs, ids(&|d| d != Direction::UpstreamToClient))?,
                build_plan(&rules, defs, ids(&|d| d != Direction::ClientToUpstream))?,
                build_plan(&rules, defs, ids(&|_| true))?,
            ])
        };
        let (plans, binary) = (plans_of(false)?, plans_of(true)?);
        Ok(Guard { rules, plans, binary })
    }
}
