//! Firewall (the runbook's "isolate affected systems": `sudo ufw deny from MALICIOUS_IP`):
//! block a validated address or network with ufw through the command runner, and list rules.

use crate::HostError;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tej_core::{CommandRunner, CommandSpec, Plan, Risk, Step, StepError, StepOutput};

/// Limits on what may be blocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirewallPolicy {
    /// Shortest IPv4 prefix accepted (24: at most a /24 at once).
    pub min_prefix_v4: u8,
    /// Shortest IPv6 prefix accepted (48).
    pub min_prefix_v6: u8,
    /// Run ufw through `sudo -n` (for a non-root operator with a sudoers rule).
    pub use_sudo: bool,
}

impl Default for FirewallPolicy {
    fn default() -> Self {
        FirewallPolicy {
            min_prefix_v4: 24,
            min_prefix_v6: 48,
            use_sudo: false,
        }
    }
}

/// A validated address or network to block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockTarget {
    /// The address (the network address for a CIDR).
    pub addr: IpAddr,
    /// Prefix length (32 or 128 for one address).
    pub prefix: u8,
}

impl fmt::Display for BlockTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let full = if self.addr.is_ipv4() { 32 } else { 128 };
        if self.prefix == full {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

fn refuse(input: &str, reason: impl Into<String>) -> HostError {
    HostError::UnsafeAddress {
        address: input.to_string(),
        reason: reason.into(),
    }
}

/// Checks `input` (an IP address or CIDR): never everything (`0.0.0.0/0`, `::/0`), never
/// wider than the policy allows, never the unspecified, loopback or multicast ranges, and a
/// CIDR must be written with its network address.
pub fn validate_block_target(
    input: &str,
    policy: &FirewallPolicy,
) -> Result<BlockTarget, HostError> {
    let s = input.trim();
    let (addr_s, prefix_s) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let addr: IpAddr = addr_s
        .parse()
        .map_err(|_| refuse(input, "not an IP address or CIDR"))?;
    let full: u8 = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix_s {
        None => full,
        Some(p) => p
            .parse::<u8>()
            .ok()
            .filter(|&p| p <= full)
            .ok_or_else(|| refuse(input, format!("prefix must be 0..={full}")))?,
    };
    if prefix == 0 {
        return Err(refuse(input, "that would block every address"));
    }
    let min = if addr.is_ipv4() {
        policy.min_prefix_v4
    } else {
        policy.min_prefix_v6
    };
    if prefix < min {
        return Err(refuse(
            input,
            format!("/{prefix} is wider than the allowed /{min}"),
        ));
    }
    if addr.is_unspecified() || addr.is_loopback() || addr.is_multicast() {
        return Err(refuse(
            input,
            "unspecified, loopback and multicast addresses are never blocked",
        ));
    }
    let host_bits_clear = match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            prefix == 32 || bits & (u32::MAX >> prefix) == 0
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            prefix == 128 || bits & (u128::MAX >> prefix) == 0
        }
    };
    if !host_bits_clear {
        return Err(refuse(
            input,
            "host bits are set; write the network address of the CIDR",
        ));
    }
    Ok(BlockTarget { addr, prefix })
}

/// One line of `ufw status numbered`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirewallRule {
    /// Rule number.
    pub number: u32,
    /// The `To` column.
    pub to: String,
    /// The `Action` column (`ALLOW IN`, `DENY IN`...).
    pub action: String,
    /// The `From` column.
    pub from: String,
}

/// The firewall's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirewallStatus {
    /// ufw is enabled.
    pub active: bool,
    /// Rules in order.
    pub rules: Vec<FirewallRule>,
}

/// Parses `ufw status numbered`.
pub fn parse_ufw_status(text: &str) -> FirewallStatus {
    let mut active = false;
    let mut rules = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if let Some(s) = t.strip_prefix("Status:") {
            active = s.trim() == "active";
            continue;
        }
        let Some(rest) = t.strip_prefix('[') else {
            continue;
        };
        let Some((num, cols)) = rest.split_once(']') else {
            continue;
        };
        let Ok(number) = num.trim().parse() else {
            continue;
        };
        // Columns are separated by runs of two or more spaces.
        let parts: Vec<&str> = cols
            .split("  ")
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect();
        if parts.len() >= 3 {
            rules.push(FirewallRule {
                number,
                to: parts[0].to_string(),
                action: parts[1].to_string(),
                from: parts[2..].join(" "),
            });
        }
    }
    FirewallStatus { active, rules }
}

/// ufw, driven through a [`CommandRunner`].
#[derive(Clone)]
pub struct Firewall {
    runner: Arc<dyn CommandRunner>,
    policy: FirewallPolicy,
}

impl fmt::Debug for Firewall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Firewall")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Firewall {
    /// A firewall using `runner` under `policy`.
    pub fn new(runner: Arc<dyn CommandRunner>, policy: FirewallPolicy) -> Firewall {
        Firewall { runner, policy }
    }

    /// The policy.
    pub fn policy(&self) -> &FirewallPolicy {
        &self.policy
    }

    fn spec(&self, args: &[&str]) -> CommandSpec {
        let spec = if self.policy.use_sudo {
            CommandSpec::new("sudo").arg("-n").arg("ufw")
        } else {
            CommandSpec::new("ufw")
        };
        spec.args(args.iter().copied())
            .timeout(Duration::from_secs(30))
    }

    /// `ufw status numbered`.
    pub async fn status(&self) -> Result<FirewallStatus, HostError> {
        let out =
            tej_core::run_checked(self.runner.as_ref(), self.spec(&["status", "numbered"])).await?;
        Ok(parse_ufw_status(&out.stdout_text()))
    }

    /// The ufw arguments that block `target`: inserted first when rules exist, so an
    /// earlier `ALLOW` cannot shadow it.
    pub fn block_args(target: &BlockTarget, existing_rules: usize) -> Vec<String> {
        let mut a = Vec::new();
        if existing_rules > 0 {
            a.extend(["insert".to_string(), "1".to_string()]);
        }
        a.extend([
            "deny".to_string(),
            "from".to_string(),
            target.to_string(),
            "to".to_string(),
            "any".to_string(),
        ]);
        a
    }

    /// Validates `input` and blocks it. Already-blocked addresses are not added twice.
    pub async fn block(&self, input: &str) -> Result<BlockOutcome, HostError> {
        let target = validate_block_target(input, &self.policy)?;
        let status = self.status().await?;
        let shown = target.to_string();
        if status
            .rules
            .iter()
            .any(|r| r.action.starts_with("DENY") && r.from == shown && r.to == "Anywhere")
        {
            return Ok(BlockOutcome {
                target,
                already_blocked: true,
                firewall_active: status.active,
            });
        }
        let args = Firewall::block_args(&target, status.rules.len());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        tej_core::run_checked(self.runner.as_ref(), self.spec(&refs)).await?;
        Ok(BlockOutcome {
            target,
            already_blocked: false,
            firewall_active: status.active,
        })
    }
}

/// What [`Firewall::block`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockOutcome {
    /// What was blocked.
    pub target: BlockTarget,
    /// A matching deny rule was already there; nothing was added.
    pub already_blocked: bool,
    /// ufw is enabled (when it is not, rules are stored but not enforced).
    pub firewall_active: bool,
}

/// Blocking an address as a mutating [`Step`].
#[derive(Debug, Clone)]
pub struct BlockAddressStep {
    firewall: Firewall,
    address: String,
}

impl BlockAddressStep {
    /// A step blocking `address` (validated in plan and apply).
    pub fn new(firewall: Firewall, address: impl Into<String>) -> BlockAddressStep {
        BlockAddressStep {
            firewall,
            address: address.into(),
        }
    }
}

#[async_trait]
impl Step for BlockAddressStep {
    fn name(&self) -> String {
        "firewall-block".into()
    }

    fn risk(&self) -> Risk {
        Risk::Mutating
    }

    fn target(&self) -> String {
        self.address.clone()
    }

    async fn plan(&self) -> Result<Plan, StepError> {
        let t = validate_block_target(&self.address, &self.firewall.policy)?;
        Ok(Plan {
            step: self.name(),
            risk: self.risk(),
            target: t.to_string(),
            actions: vec![format!("ufw deny from {t} to any (inserted as rule 1)")],
        })
    }

    async fn apply(&self) -> Result<StepOutput, StepError> {
        let o = self.firewall.block(&self.address).await?;
        let mut summary = if o.already_blocked {
            format!("{} was already blocked", o.target)
        } else {
            format!("blocked {}", o.target)
        };
        if !o.firewall_active {
            summary.push_str(" (warning: ufw is inactive; enable it for the rule to apply)");
        }
        Ok(StepOutput {
            summary,
            findings: Vec::new(),
            data: serde_json::to_value(&o)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mockall::Sequence;
    use tej_core::MockCommandRunner;
    use tej_core::command::CommandOutput;

    fn out(code: i32, stdout: &str) -> CommandOutput {
        CommandOutput::exited(code, stdout, "")
    }

    fn argv(spec: &CommandSpec) -> Vec<String> {
        std::iter::once(spec.program.clone())
            .chain(spec.args.iter().map(|a| a.to_string_lossy().into_owned()))
            .collect()
    }

    const STATUS: &str = "Status: active\n\n     To                         Action      From\n     --                         ------      ----\n[ 1] 22/tcp                     ALLOW IN    Anywhere\n[ 2] Anywhere                   DENY IN     203.0.113.7\n[ 3] 22/tcp (v6)                ALLOW IN    Anywhere (v6)\n";

    #[test]
    fn validation() {
        let p = FirewallPolicy::default();
        assert_eq!(
            validate_block_target("203.0.113.7", &p)
                .unwrap()
                .to_string(),
            "203.0.113.7"
        );
        assert_eq!(
            validate_block_target(" 198.51.100.0/24 ", &p)
                .unwrap()
                .to_string(),
            "198.51.100.0/24"
        );
        assert_eq!(
            validate_block_target("2001:db8::/48", &p)
                .unwrap()
                .to_string(),
            "2001:db8::/48"
        );
        for bad in [
            "0.0.0.0/0",
            "::/0",
            "10.0.0.0/8",
            "2001:db8::/32",
            "0.0.0.0",
            "::",
            "127.0.0.1",
            "::1",
            "224.0.0.1",
            "198.51.100.7/24",
            "1.2.3.4/33",
            "example.com",
            "1.2.3.4; rm -rf /",
            "",
        ] {
            assert!(
                matches!(
                    validate_block_target(bad, &p),
                    Err(HostError::UnsafeAddress { .. })
                ),
                "{bad} should be refused"
            );
        }
        let wide = FirewallPolicy {
            min_prefix_v4: 8,
            ..p
        };
        assert!(validate_block_target("10.0.0.0/8", &wide).is_ok());
        assert!(validate_block_target("0.0.0.0/0", &wide).is_err());
    }

    #[test]
    fn parses_numbered_status() {
        let s = parse_ufw_status(STATUS);
        assert!(s.active);
        assert_eq!(s.rules.len(), 3);
        assert_eq!(s.rules[1].action, "DENY IN");
        assert_eq!(s.rules[1].from, "203.0.113.7");
        assert_eq!(s.rules[2].to, "22/tcp (v6)");
        assert!(!parse_ufw_status("Status: inactive\n").active);
    }

    #[tokio::test]
    async fn block_inserts_first_rule_through_the_runner() {
        let mut r = MockCommandRunner::new();
        let mut seq = Sequence::new();
        r.expect_run()
            .withf(|s| argv(s) == ["ufw", "status", "numbered"])
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(out(0, STATUS)));
        r.expect_run()
            .withf(|s| {
                argv(s)
                    == [
                        "ufw",
                        "insert",
                        "1",
                        "deny",
                        "from",
                        "198.51.100.9",
                        "to",
                        "any",
                    ]
            })
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(out(0, "Rule inserted\n")));
        let fw = Firewall::new(Arc::new(r), FirewallPolicy::default());
        let o = fw.block("198.51.100.9").await.unwrap();
        assert!(!o.already_blocked && o.firewall_active);
    }

    #[tokio::test]
    async fn already_blocked_and_refused_addresses_run_nothing_more() {
        let mut r = MockCommandRunner::new();
        r.expect_run()
            .withf(|s| argv(s) == ["sudo", "-n", "ufw", "status", "numbered"])
            .times(1)
            .returning(|_| Ok(out(0, STATUS)));
        let fw = Firewall::new(
            Arc::new(r),
            FirewallPolicy {
                use_sudo: true,
                ..FirewallPolicy::default()
            },
        );
        assert!(fw.block("203.0.113.7").await.unwrap().already_blocked);
        assert!(matches!(
            fw.block("0.0.0.0/0").await,
            Err(HostError::UnsafeAddress { .. })
        ));
    }

    #[tokio::test]
    async fn ufw_failure_is_an_error_and_empty_rules_use_plain_deny() {
        let mut r = MockCommandRunner::new();
        let mut seq = Sequence::new();
        r.expect_run()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(out(0, "Status: inactive\n")));
        r.expect_run()
            .withf(|s| argv(s) == ["ufw", "deny", "from", "198.51.100.0/24", "to", "any"])
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(out(1, "")));
        let fw = Firewall::new(Arc::new(r), FirewallPolicy::default());
        assert!(matches!(
            fw.block("198.51.100.0/24").await,
            Err(HostError::Command(_))
        ));
    }

    #[tokio::test]
    async fn step_plans_without_running() {
        let r = MockCommandRunner::new();
        let step = BlockAddressStep::new(
            Firewall::new(Arc::new(r), FirewallPolicy::default()),
            "203.0.113.8",
        );
        assert_eq!(step.risk(), Risk::Mutating);
        let p = step.plan().await.unwrap();
        assert_eq!(p.target, "203.0.113.8");
        let bad = BlockAddressStep::new(
            Firewall::new(
                Arc::new(MockCommandRunner::new()),
                FirewallPolicy::default(),
            ),
            "::/0",
        );
        assert!(bad.plan().await.is_err());
    }
}
