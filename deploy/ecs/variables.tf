# --- where it runs ----------------------------------------------------------------------------

variable "name" {
  description = "Name of the service, task family, roles, log group and security group."
  type        = string
  default     = "byoc-runner"

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9_-]{0,47}$", var.name))
    error_message = "name must be 1-48 letters, digits, '-' or '_' (it prefixes IAM role names)."
  }
}

variable "cluster_arn" {
  description = "ARN of the ECS cluster the service runs in."
  type        = string
}

variable "subnet_ids" {
  description = "Subnets for the task (private subnets with a NAT route or VPC endpoints: the runner only makes outbound calls)."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) > 0
    error_message = "subnet_ids must name at least one subnet."
  }
}

variable "vpc_id" {
  description = "VPC of the subnets; needed only when this module creates the security group (security_group_ids empty)."
  type        = string
  default     = null

  validation {
    condition     = var.vpc_id != null || length(var.security_group_ids) > 0
    error_message = "Set vpc_id (an egress-only security group is created) or pass security_group_ids."
  }
}

variable "security_group_ids" {
  description = "Security groups for the task. Empty: an egress-only group is created (the runner needs no inbound traffic)."
  type        = list(string)
  default     = []
}

variable "egress_cidr_blocks" {
  description = "Where the created security group lets the runner connect (the runner API, registries, cloud APIs)."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "assign_public_ip" {
  description = "Give the task a public IP (only for public subnets without NAT)."
  type        = bool
  default     = false
}

variable "desired_count" {
  description = "0 or 1: one runner id is one process. For more runners deploy this module again with another runner_id."
  type        = number
  default     = 1

  validation {
    condition     = contains([0, 1], var.desired_count)
    error_message = "desired_count must be 0 or 1: two tasks sharing a runner id would race for the same jobs."
  }
}

variable "platform_version" {
  description = "Fargate platform version."
  type        = string
  default     = "LATEST"
}

variable "cpu_architecture" {
  description = "X86_64 or ARM64 (the image must be built for it)."
  type        = string
  default     = "X86_64"

  validation {
    condition     = contains(["X86_64", "ARM64"], var.cpu_architecture)
    error_message = "cpu_architecture must be X86_64 or ARM64."
  }
}

variable "cpu" {
  description = "Task CPU units (1024 = 1 vCPU). Terraform and image jobs run inside this task."
  type        = number
  default     = 1024
}

variable "memory" {
  description = "Task memory in MiB."
  type        = number
  default     = 4096
}

variable "ephemeral_storage_gib" {
  description = "Fargate ephemeral storage in GiB (21-200): workspaces, the tools cache and /tmp live there."
  type        = number
  default     = 50

  validation {
    condition     = var.ephemeral_storage_gib >= 21 && var.ephemeral_storage_gib <= 200
    error_message = "ephemeral_storage_gib must be between 21 and 200."
  }
}

variable "enable_execute_command" {
  description = "Allow `aws ecs execute-command` into the task (then the task role also needs the SSM messages permissions)."
  type        = bool
  default     = false
}

# --- the runner -------------------------------------------------------------------------------

variable "image" {
  description = "Runner image reference, pinned by tag or (better) digest, e.g. 123456789012.dkr.ecr.us-east-1.amazonaws.com/byoc-runner@sha256:..."
  type        = string
}

variable "image_ecr_repository_arn" {
  description = "ARN of the ECR repository holding the image: the execution role gets pull rights on it alone. Null for a public image."
  type        = string
  default     = null
}

variable "runner_id" {
  description = "The runner's id in the control plane (RUNNER_ID)."
  type        = string

  validation {
    condition     = length(var.runner_id) > 0
    error_message = "runner_id must not be empty."
  }
}

variable "api_url" {
  description = "The runner API base URL (RUNNER_API_URL), without credentials."
  type        = string

  validation {
    condition     = can(regex("^https?://[^/@]+(/.*)?$", var.api_url))
    error_message = "api_url must be an http(s) URL without credentials in it."
  }
}

variable "api_token_secret_arn" {
  description = <<-EOT
    ARN of the runner API token: a Secrets Manager secret (arn:aws:secretsmanager:...) or an SSM
    SecureString parameter (arn:aws:ssm:...:parameter/...). ECS injects it as RUNNER_API_TOKEN when
    the task starts; the token itself never passes through terraform (not a variable, not in state,
    not an output).
  EOT
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:(secretsmanager:[^:]+:[0-9]{12}:secret:.+|ssm:[^:]+:[0-9]{12}:parameter/.+)$", var.api_token_secret_arn))
    error_message = "api_token_secret_arn must be a Secrets Manager secret ARN or an SSM parameter ARN."
  }
}

variable "api_token_secret_json_key" {
  description = "When the Secrets Manager secret is a JSON object, the key holding the token. Null: the whole secret string is the token."
  type        = string
  default     = null
}

variable "secrets_kms_key_arn" {
  description = "Customer-managed KMS key encrypting the token secret, if any: the execution role may decrypt with it through Secrets Manager/SSM only."
  type        = string
  default     = null
}

variable "task_role_arn" {
  description = "IAM role the runner and its jobs act as (terraform, ECR pushes, ...). Its permissions are what jobs can do in the account."
  type        = string
}

variable "groups" {
  description = "Job groups to poll (RUNNER_GROUPS). Empty: from the control plane's settings."
  type        = list(string)
  default     = []

  validation {
    condition = alltrue([for g in var.groups : contains(
      ["build", "sync", "deploy", "sandbox", "runner", "operations", "actions", "management", "health-checks"], g
    )])
    error_message = "groups must be among build, sync, deploy, sandbox, runner, operations, actions, management, health-checks."
  }
}

variable "concurrency" {
  description = "Jobs at once per group (RUNNER_CONCURRENCY), e.g. { build = 2, deploy = 1 }. Default 1 each."
  type        = map(number)
  default     = {}
}

variable "max_concurrency" {
  description = "Jobs at once over all groups (RUNNER_MAX_CONCURRENCY)."
  type        = number
  default     = 8
}

variable "drain_grace" {
  description = "Seconds SIGTERM waits for running jobs to finish before cancelling them (RUNNER_DRAIN_GRACE)."
  type        = number
  default     = 110
}

variable "stop_timeout" {
  description = "Seconds ECS waits after SIGTERM before SIGKILL. At least drain_grace; Fargate allows at most 120."
  type        = number
  default     = 120

  validation {
    condition     = var.stop_timeout >= var.drain_grace && var.stop_timeout <= 120
    error_message = "stop_timeout must be at least drain_grace (or SIGKILL cuts the drain short) and at most 120 (the Fargate limit)."
  }
}

variable "log_level" {
  description = "Runner log level (RUNNER_LOG_LEVEL). Null: from the control plane's settings."
  type        = string
  default     = null
}

variable "health_port" {
  description = "Port of /healthz, /readyz and /metrics inside the task (no security group rule opens it)."
  type        = number
  default     = 9090
}

variable "readonly_root_filesystem" {
  description = "Run with a read-only root filesystem; the state dir and /tmp are task-storage volumes."
  type        = bool
  default     = true
}

variable "extra_environment" {
  description = "More plain environment variables (e.g. RUNNER_INSECURE_REGISTRIES, RUNNER_TERRAFORM_VERSION). Never a secret."
  type        = map(string)
  default     = {}

  validation {
    condition     = !contains(keys(var.extra_environment), "RUNNER_API_TOKEN")
    error_message = "RUNNER_API_TOKEN must come from api_token_secret_arn, never from plain environment."
  }
}

# --- logs and tags ----------------------------------------------------------------------------

variable "log_retention_days" {
  description = "Retention of the runner's CloudWatch log group."
  type        = number
  default     = 30
}

variable "log_kms_key_arn" {
  description = "KMS key for the log group. Null: CloudWatch's default encryption."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
