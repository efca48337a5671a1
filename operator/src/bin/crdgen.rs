//! Prints the SwappoMessaging CRD as YAML (`make crds` writes it to `crds/`).
fn main() {
    print!("{}", swappo_operator::crd::crd_yaml());
}
