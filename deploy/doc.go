// Package deploy holds the deployment files of the connector, and tests
// that keep them honest; it has no Go API.
//
//   - kubernetes/: plain manifests (kustomization.yaml) for the worker fleet:
//     ConfigMap, Secret template, Deployment, metrics Service,
//     PodDisruptionBudget, KEDA ScaledObject, stream-provisioning Job.
//   - nats/: a production NATS server config (3-node cluster, R3 streams,
//     the sync_interval trade-off).
//   - compose/: configs and the secret generator used by the repository's
//     docker-compose.yml; compose-check.sh validates that file with Docker
//     Compose.
//
// The tests decode every manifest strictly into the Kubernetes API types (a
// misspelt field fails), check probes, grace periods and that no secret is
// written in plain text, start a NATS server from the Compose config with
// generated passwords, and parse the production NATS config.
//
// See docs/deploy.md for how to run it all.
package deploy
