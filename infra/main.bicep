// `azd up` entry point: one resource group holding the Function App and what it needs, wired to an existing
// Azure OpenAI account in another resource group. No keys anywhere: every caller is a managed identity (or the
// deploying developer) with the narrowest built-in role that works. tests/test_infra.py holds this to its contracts.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; seeds the resource group name and a unique token in every resource name.')
param environmentName string

@minLength(1)
@description('Region of every new resource. It must offer Flex Consumption (az functionapp list-flexconsumption-locations).')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Object id of the deploying developer (azd sets it), granted the data roles to run the app locally against these resources.')
param principalId string = ''

@description('Kind of principal that principalId is.')
@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param principalType string = 'User'

@description('Grant principalId the data roles for local runs. CI deployments turn it off: a pipeline does not run the app.')
param deployerDataAccess bool = true

@description('Subscription of the existing Azure OpenAI account; empty means the deployment subscription.')
param openAiSubscriptionId string = ''

@minLength(1)
@description('Resource group of the existing Azure OpenAI account.')
param openAiResourceGroupName string

@minLength(2)
@maxLength(64)
@description('Name of the existing Azure OpenAI account (Microsoft.CognitiveServices/accounts).')
param openAiAccountName string

@description('Azure OpenAI data-plane api-version the app calls.')
param openAiApiVersion string = '2024-10-21'

@description('Whether runs may have Azure OpenAI read their input from a blob and write results to a folder (needs openAiApiVersion v1, and the account\'s system-assigned identity with Storage Blob Data Contributor on that storage).')
param openAiBatchBlobStorage bool = false

@description('Durable Functions backend: Azure Storage (the host storage account) or a Durable Task Scheduler with one task hub.')
@allowed([
  'AzureStorage'
  'DurableTaskScheduler'
])
param durableBackend string = 'AzureStorage'

@description('Durable task hub name (DURABLE_TASK_HUB); letters and digits, 3 to 45 characters, so that both backends accept it.')
@minLength(3)
@maxLength(45)
param taskHubName string = 'aoaibatch'

@description('Memory of each Flex Consumption instance, in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Most Flex Consumption instances the app scales out to.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 100

@description('Table of the job catalogue (CATALOG_TABLE) in the host storage account.')
param catalogTable string = 'jobs'

@description('NCRONTAB schedule of the deployment sync (DEPLOYMENT_SYNC_SCHEDULE).')
param deploymentSyncSchedule string = '0 */30 * * * *'

@description('Blob container for staged inputs and results (STAGING_CONTAINER) in the host storage account.')
param stagingContainer string = 'aoaibatch-staging'

@description('Price table (PRICES), JSON: {"currency", "batchDiscount", "models": {name: {input, cachedInput, output, batchDiscount?}}} per million tokens (a batchDiscount given for a model overrides the table one); empty for no cost estimates.')
param prices string = ''

@description('Turn on Key Vault purge protection. It cannot be turned off again and keeps a deleted vault\'s name reserved for 7 days, so `azd down --purge` followed by `azd up` needs a new environment name.')
param keyVaultPurgeProtection bool = false

var abbrs = loadJsonContent('./abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var useDurableTaskScheduler = durableBackend == 'DurableTaskScheduler'
var openAiSubscription = empty(openAiSubscriptionId) ? subscription().subscriptionId : openAiSubscriptionId
var deployerPrincipalId = deployerDataAccess ? principalId : ''
var functionAppName = '${abbrs.webSitesFunctions}api-${resourceToken}'
var durableTaskSchedulerName = '${abbrs.durableTaskSchedulers}${resourceToken}'
// Flex Consumption reads the app package from this container with the app's identity.
var deploymentStorageContainerName = 'app-package-${take(functionAppName, 32)}-${take(toLower(uniqueString(functionAppName, resourceToken)), 7)}'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: tags
}

// The account is only read here (its endpoint) and granted to; it is never modified.
resource openAiAccount 'Microsoft.CognitiveServices/accounts@2024-10-01' existing = {
  name: openAiAccountName
  scope: resourceGroup(openAiSubscription, openAiResourceGroupName)
}

// AZURE_OPENAI_RESOURCES: the JSON array shared/settings.py parses; no apiKeySecret, so the app uses Entra tokens.
var openAiResources = string([
  {
    name: openAiAccountName
    endpoint: openAiAccount.properties.endpoint
    subscriptionId: openAiSubscription
    resourceGroup: openAiResourceGroupName
    tenantId: tenant().tenantId
    apiVersion: openAiApiVersion
    batchBlobStorage: openAiBatchBlobStorage
  }
])

// The app's one identity: storage, Key Vault, telemetry, the task hub and Azure OpenAI all see this principal.
module apiIdentity 'br/public:avm/res/managed-identity/user-assigned-identity:0.4.1' = {
  name: 'api-identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}api-${resourceToken}'
    location: location
    tags: tags
  }
}

// Host storage: AzureWebJobsStorage (blob leases, timers), Durable Functions (Azure Storage backend), the job
// catalogue's tables and the deployment package. Entra only: shared-key access, and so every key, is disabled.
module storage 'br/public:avm/res/storage/storage-account:0.29.0' = {
  name: 'storage'
  scope: rg
  params: {
    name: '${abbrs.storageStorageAccounts}${resourceToken}'
    location: location
    tags: tags
    kind: 'StorageV2'
    skuName: 'Standard_LRS'
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    // Flex Consumption without VNet integration reaches storage over its public endpoint, with Entra auth only.
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
    blobServices: {
      containers: [
        {
          name: deploymentStorageContainerName
        }
        {
          // Staged inputs and results (STAGING_CONTAINER); the app's identity has Storage Blob Data Owner.
          name: stagingContainer
        }
      ]
    }
  }
}

module logAnalytics 'br/public:avm/res/operational-insights/workspace:0.13.0' = {
  name: 'log-analytics'
  scope: rg
  params: {
    name: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    location: location
    tags: tags
    dataRetention: 30
  }
}

// Telemetry is accepted only with an Entra token (disableLocalAuth): the instrumentation key identifies, it does not authorize.
module applicationInsights 'br/public:avm/res/insights/component:0.7.1' = {
  name: 'application-insights'
  scope: rg
  params: {
    name: '${abbrs.insightsComponents}${resourceToken}'
    location: location
    tags: tags
    workspaceResourceId: logAnalytics.outputs.resourceId
    disableLocalAuth: true
  }
}

// Holds input file ids (inputFileSecret) and, only if a resource uses one, an API key (apiKeySecret). RBAC only.
module keyVault 'br/public:avm/res/key-vault/vault:0.13.3' = {
  name: 'key-vault'
  scope: rg
  params: {
    name: '${abbrs.keyVaultVaults}${resourceToken}'
    location: location
    tags: tags
    sku: 'standard'
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 7
    enablePurgeProtection: keyVaultPurgeProtection
    // Reached over its public endpoint like storage; every data call still needs an Entra token and a role.
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
    diagnosticSettings: [
      {
        workspaceResourceId: logAnalytics.outputs.resourceId
      }
    ]
  }
}

module appServicePlan 'br/public:avm/res/web/serverfarm:0.5.0' = {
  name: 'app-service-plan'
  scope: rg
  params: {
    name: '${abbrs.webServerFarms}${resourceToken}'
    location: location
    tags: tags
    skuName: 'FC1'
    reserved: true
  }
}

module durableTaskScheduler 'app/durable-task-scheduler.bicep' = if (useDurableTaskScheduler) {
  name: 'durable-task-scheduler'
  scope: rg
  params: {
    name: durableTaskSchedulerName
    taskHubName: taskHubName
    location: location
    tags: tags
  }
}

module api 'app/api.bicep' = {
  name: 'api'
  scope: rg
  params: {
    name: functionAppName
    location: location
    tags: tags
    appServicePlanId: appServicePlan.outputs.resourceId
    storageAccountName: storage.outputs.name
    deploymentStorageContainerName: deploymentStorageContainerName
    applicationInsightsName: applicationInsights.outputs.name
    keyVaultUri: keyVault.outputs.uri
    identityId: apiIdentity.outputs.resourceId
    identityClientId: apiIdentity.outputs.clientId
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    openAiResources: openAiResources
    catalogTable: catalogTable
    deploymentSyncSchedule: deploymentSyncSchedule
    stagingContainer: stagingContainer
    prices: prices
    taskHubName: taskHubName
    durableBackend: durableBackend
    durableTaskSchedulerEndpoint: useDurableTaskScheduler ? durableTaskScheduler!.outputs.endpoint : ''
  }
}

module rbac 'app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    keyVaultName: keyVault.outputs.name
    applicationInsightsName: applicationInsights.outputs.name
    useDurableTaskScheduler: useDurableTaskScheduler
    durableTaskSchedulerName: durableTaskSchedulerName
    taskHubName: taskHubName
    appPrincipalId: apiIdentity.outputs.principalId
    userPrincipalId: deployerPrincipalId
    userPrincipalType: principalType
  }
  // The task hub must exist before roles are assigned on it.
  dependsOn: [
    durableTaskScheduler
  ]
}

// The account lives in another resource group (maybe another subscription): its assignments are deployed there.
module openAiRbac 'app/openai-rbac.bicep' = {
  name: 'openai-rbac-${resourceToken}'
  scope: resourceGroup(openAiSubscription, openAiResourceGroupName)
  params: {
    accountName: openAiAccountName
    appPrincipalId: apiIdentity.outputs.principalId
    userPrincipalId: deployerPrincipalId
    userPrincipalType: principalType
  }
}

// Outputs become azd environment values (`azd env get-values`): names and URLs only, never a key.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output SERVICE_API_NAME string = api.outputs.name
output SERVICE_API_URI string = api.outputs.uri
output AZURE_FUNCTION_APP_NAME string = api.outputs.name
output AZURE_FUNCTION_APP_URL string = api.outputs.uri
output AZURE_MANAGED_IDENTITY_NAME string = apiIdentity.outputs.name
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output KEY_VAULT_URL string = keyVault.outputs.uri
output AZURE_APPLICATION_INSIGHTS_NAME string = applicationInsights.outputs.name
output AZURE_OPENAI_RESOURCES string = openAiResources
output CATALOG_TABLE string = catalogTable
output DURABLE_BACKEND string = durableBackend
output DURABLE_TASK_HUB string = taskHubName
output DURABLE_TASK_SCHEDULER_ENDPOINT string = useDurableTaskScheduler ? durableTaskScheduler!.outputs.endpoint : ''
