//! Placeholder of the sensitive-data engine's API (replaced by the real engine).
#![allow(missing_docs, dead_code, unused_variables)]

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    ClientToUpstream,
    UpstreamToClient,
    Both,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum GuardAction {
    Log,
    Redact,
    Block,
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleKind {
    CardNumber,
    Iban,
    AwsAccessKey,
    PrivateKeyPem,
    Jwt,
    PasswordField { names: Vec<String> },
    Pattern { regex: String, keywords: Vec<String> },
}
#[derive(Debug, Clone)]
pub struct RuleDef {
    pub name: String,
    pub kind: RuleKind,
    pub direction: Direction,
    pub action: GuardAction,
    pub min_matches: u32,
}
#[derive(Debug)]
pub struct RuleError {
    pub rule: usize,
    pub field: &'static str,
    pub message: String,
}
#[derive(Debug)]
pub struct Guard {
    defs: Vec<RuleDef>,
}
impl Guard {
    pub fn compile(defs: &[RuleDef]) -> Result<Guard, RuleError> {
        Ok(Guard { defs: defs.to_vec() })
    }
    pub fn is_empty(&self) -> bool {
        self.defs.is_empty()
    }
    pub fn applies_to(&self, dir: Direction) -> bool {
        !self.defs.is_empty()
    }
    pub fn scan(&self, dir: Direction, text: &str, key: &FingerprintKey) -> Option<Findings> {
        None
    }
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Findings {
    pub hits: Vec<Hit>,
    pub action: GuardAction,
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub rule: String,
    pub action: GuardAction,
    pub pointer: String,
    pub len: usize,
    pub fingerprint: String,
}
#[derive(Debug)]
pub struct FingerprintKey([u8; 32]);
impl FingerprintKey {
    pub fn random() -> Self {
        FingerprintKey([0; 32])
    }
}
pub fn redact(text: &str, findings: &Findings) -> Option<String> {
    None
}
