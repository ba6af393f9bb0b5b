# A CI step on a Nomad client, its output streamed to Tailrace while it runs: `tailrace run`
# wraps the step's command in the step's own image, spools output on local disk until Tailrace
# acknowledges it, and exits with the command's exit code (75 if output could not be delivered).
#
# The CI control plane, per step:
#   1. creates the Tailrace job (once per CI job) and keeps its job token:
#        tailrace job create --project gh/acme/app --json          # {"job_id": …, "token": …}
#   2. puts the job token where only this step's allocation can read it (Nomad Variables; the
#      job's workload identity reads nomad/jobs/ci-step/*):
#        nomad var put nomad/jobs/ci-step/JOB_ID tailrace_token=JOB_TOKEN
#   3. dispatches the step:
#        nomad job dispatch -meta tailrace_job=JOB_ID -meta step=test \
#          -meta image=docker.io/library/rust:1.95 -meta command='cargo test' ci-step
#   4. removes the variable when the CI job ends: nomad var purge nomad/jobs/ci-step/JOB_ID
#
# Check it: nomad job validate deploy/nomad/ci-step.nomad.hcl (CI parses it and checks that every
# `tailrace run` flag used here exists: scripts/check-deploy.sh).

variable "tailrace_server" {
  description = "Tailrace ingest URL (the tailrace-ingest load balancer)"
  type        = string
  default     = "https://ingest.tailrace.example.com"
}

variable "tailrace_binary" {
  description = "Where Nomad clients fetch the tailrace binary (mirror it for private installs)"
  type        = string
  default     = "https://downloads.tailrace.example.com/0.1.0/tailrace-x86_64-unknown-linux-gnu"
}

variable "tailrace_sha256" {
  description = "SHA-256 of the binary, checked by Nomad before the step starts"
  type        = string
  default     = "0000000000000000000000000000000000000000000000000000000000000000"
}

job "ci-step" {
  type        = "batch"
  datacenters = ["*"]

  parameterized {
    payload       = "forbidden"
    meta_required = ["tailrace_job", "step", "image", "command"]
    meta_optional = ["timeout"]
  }

  meta {
    timeout = "60m"
  }

  group "step" {
    # A CI step runs once: a retry is a new step, decided by the CI control plane.
    restart {
      attempts = 0
      mode     = "fail"
    }

    reschedule {
      attempts  = 0
      unlimited = false
    }

    ephemeral_disk {
      # The agent's spool: output not yet acknowledged (the first 8 MiB stay in memory).
      size = 2048
    }

    task "run" {
      driver = "docker"

      config {
        image   = "${NOMAD_META_image}"
        command = "/local/tailrace"
        args = [
          "run",
          "--job", "${NOMAD_META_tailrace_job}",
          "--step", "${NOMAD_META_step}",
          "--timeout", "${NOMAD_META_timeout}",
          "--spool-dir", "/alloc/data",
          "--mask-env", "TAILRACE_TOKEN",
          "--",
          "sh", "-c", "${NOMAD_META_command}",
        ]
      }

      artifact {
        source      = var.tailrace_binary
        destination = "local/tailrace"
        mode        = "file"
        options {
          checksum = "sha256:${var.tailrace_sha256}"
        }
      }

      # The job token from Nomad Variables, as TAILRACE_TOKEN (never in the job spec or its
      # logs); secrets/ is not visible to other allocations.
      template {
        destination = "secrets/tailrace.env"
        env         = true
        change_mode = "noop"
        data        = <<-EOT
          {{ with nomadVar (print "nomad/jobs/ci-step/" (env "NOMAD_META_tailrace_job")) }}TAILRACE_TOKEN={{ .tailrace_token }}{{ end }}
        EOT
      }

      env {
        TAILRACE_SERVER = var.tailrace_server
      }

      # `tailrace run` forwards SIGTERM to the command, then SIGKILLs it after --kill-grace
      # (10 s), and still delivers every byte: give it that long plus delivery time.
      kill_timeout = "45s"

      resources {
        cpu    = 2000
        memory = 2048
      }
    }
  }
}
