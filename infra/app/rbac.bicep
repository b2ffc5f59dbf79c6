// Role assignments inside the app's resource group: one per need, each on the narrowest scope (the single storage
// account, vault, component or task hub), each GUID named in a comment and explained in the assignment's
// description. The Azure OpenAI account's assignments are in openai-rbac.bicep, deployed to that account's group.

param storageAccountName string
param keyVaultName string
param applicationInsightsName string

@description('Deploy the task hub assignments (durableBackend = DurableTaskScheduler).')
param useDurableTaskScheduler bool = false

@description('Name of the scheduler (also when not deployed: the task hub\'s resource id is computed from it).')
param durableTaskSchedulerName string

param taskHubName string

@description('Principal id of the Function App\'s user-assigned identity.')
param appPrincipalId string

@description('The deploying developer (empty: no developer access), given the data roles to run the app locally.')
param userPrincipalId string = ''

@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param userPrincipalType string = 'User'

// The host's blob connection (leases, timers, the Flex deployment package) needs Owner, not Contributor.
var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b' // Storage Blob Data Owner
// Durable Functions' control and work-item queues (Azure Storage backend), the host's internal queues.
var storageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88' // Storage Queue Data Contributor
// Durable Functions' history and instance tables, the job catalogue (jobs, jobsimports, jobscancels).
var storageTableDataContributor = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3' // Storage Table Data Contributor
// Reading input file ids (inputFileSecret) and API keys (apiKeySecret) at run time; nothing is written.
var keyVaultSecretsUser = '4633458b-17de-408a-b874-0445c86b69e6' // Key Vault Secrets User
// The developer stores input file ids as secrets, which Secrets User cannot do.
var keyVaultSecretsOfficer = 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7' // Key Vault Secrets Officer
// Sending telemetry with an Entra token to a component whose local (key) auth is disabled.
var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb' // Monitoring Metrics Publisher
// Orchestrations, activities, timers and events on the task hub (Durable Task Scheduler backend).
var durableTaskDataContributor = '0ad04412-c4d5-4796-b79c-f76d14c8d402' // Durable Task Data Contributor

var storageRoles = [
  {
    id: storageBlobDataOwner
    why: 'AzureWebJobsStorage blob service: host leases and timers, the Flex Consumption deployment package.'
  }
  {
    id: storageQueueDataContributor
    why: 'AzureWebJobsStorage queue service: Durable Functions control and work-item queues.'
  }
  {
    id: storageTableDataContributor
    why: 'AzureWebJobsStorage table service: Durable Functions history and instances, the job catalogue.'
  }
]
var hasUser = !empty(userPrincipalId)

resource storageAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource keyVault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

// Referenced by name only (a resource id); the assignments on it are conditional, not the reference.
resource scheduler 'Microsoft.DurableTask/schedulers@2025-11-01' existing = {
  name: durableTaskSchedulerName
}

resource taskHub 'Microsoft.DurableTask/schedulers/taskHubs@2025-11-01' existing = {
  parent: scheduler
  name: taskHubName
}

// The Function App's identity -----------------------------------------------------------------------------------

resource appStorage 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for role in storageRoles: {
    name: guid(storageAccount.id, appPrincipalId, role.id)
    scope: storageAccount
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role.id)
      principalId: appPrincipalId
      principalType: 'ServicePrincipal'
      description: role.why
    }
  }
]

resource appKeyVault 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(keyVault.id, appPrincipalId, keyVaultSecretsUser)
  scope: keyVault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Reads input file ids and API keys from secrets at run time.'
  }
}

resource appTelemetry 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(applicationInsights.id, appPrincipalId, monitoringMetricsPublisher)
  scope: applicationInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Sends telemetry with an Entra token (local auth is disabled on the component).'
  }
}

resource appTaskHub 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (useDurableTaskScheduler) {
  name: guid(taskHub.id, appPrincipalId, durableTaskDataContributor)
  scope: taskHub
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', durableTaskDataContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Runs orchestrations and activities on the task hub.'
  }
}

// The deploying developer: the same data access, to run the app locally against these resources ------------------

resource userStorage 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for role in storageRoles: if (hasUser) {
    name: guid(storageAccount.id, userPrincipalId, role.id)
    scope: storageAccount
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role.id)
      principalId: userPrincipalId
      principalType: userPrincipalType
      description: 'Local runs: ${role.why}'
    }
  }
]

resource userKeyVault 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (hasUser) {
  name: guid(keyVault.id, userPrincipalId, keyVaultSecretsOfficer)
  scope: keyVault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsOfficer)
    principalId: userPrincipalId
    principalType: userPrincipalType
    description: 'Stores input file ids as secrets; local runs read them.'
  }
}

resource userTelemetry 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (hasUser) {
  name: guid(applicationInsights.id, userPrincipalId, monitoringMetricsPublisher)
  scope: applicationInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
    principalId: userPrincipalId
    principalType: userPrincipalType
    description: 'Local runs send telemetry with the developer\'s Entra token.'
  }
}

resource userTaskHub 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (useDurableTaskScheduler && hasUser) {
  name: guid(taskHub.id, userPrincipalId, durableTaskDataContributor)
  scope: taskHub
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', durableTaskDataContributor)
    principalId: userPrincipalId
    principalType: userPrincipalType
    description: 'Local runs and the scheduler dashboard.'
  }
}
