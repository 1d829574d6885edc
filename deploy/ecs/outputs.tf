# Identifiers only. The runner token is not an input of this module, so it cannot leak through an
# output or the state; only ECS reads it, from Secrets Manager/SSM, when a task starts.

output "service_name" {
  description = "Name of the ECS service."
  value       = aws_ecs_service.runner.name
}

output "service_id" {
  description = "ARN of the ECS service."
  value       = aws_ecs_service.runner.id
}

output "task_definition_arn" {
  description = "ARN of the task definition revision in use."
  value       = aws_ecs_task_definition.runner.arn
}

output "execution_role_arn" {
  description = "ARN of the execution role (image pull, logs, token read)."
  value       = aws_iam_role.execution.arn
}

output "log_group_name" {
  description = "CloudWatch log group of the runner's own logs."
  value       = aws_cloudwatch_log_group.runner.name
}

output "security_group_ids" {
  description = "Security groups attached to the task."
  value       = local.security_group_ids
}
