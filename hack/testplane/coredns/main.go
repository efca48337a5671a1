// A trimmed CoreDNS: the upstream coremain with only the plugins the local node's cluster DNS
// uses (see scripts/node-lib.sh's Corefile). CoreDNS plugins register themselves in init(),
// so this main is a complete CoreDNS without the cloud back-ends of the full build. No
// `forward` plugin: names outside the cluster are never sent upstream.
// Built by scripts/testenv-bins.sh.
package main

import (
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)

func main() { coremain.Run() }
